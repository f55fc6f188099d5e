//! The binary as an operator runs it: `run` (exit codes, SIGTERM drain) and `dev`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::emulator::{
    Emulator, EmulatorOptions, APP_TOKEN_MINT_PATH, DEV_APP_USER_ID, DEV_TENANT_ID,
};

fn sidecar() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jtl-auth-sidecar"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("JTL_SIDECAR_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// Lines of the child's stdout, read on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

fn next_line_matching(lines: &mpsc::Receiver<String>, what: impl Fn(&str) -> bool) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the sidecar printed the expected line");
        if what(&line) {
            return line;
        }
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_for_exit(child: &mut Child) -> Option<i32> {
    for _ in 0..200 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the sidecar did not exit within 10 s");
}

/// A backend that answers after `delay`, and tells `arrived` when a request comes in.
async fn slow_backend(delay: Duration, arrived: std::sync::Arc<tokio::sync::Notify>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                    let arrived = arrived.clone();
                    async move {
                        arrived.notify_one();
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"done"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn status_of(url: &str, token: Option<&str>) -> Result<(u16, Bytes), String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut request = Request::get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// `run` as a process in front of `upstream` against the emulator, with a SQLite store in
/// `dir` and `extra_toml` appended; waits for its "is listening" line. Returns the child,
/// its stdout lines and the ingress and admin addresses.
struct RunningSidecar {
    child: Child,
    lines: mpsc::Receiver<String>,
    ingress: SocketAddr,
    admin: SocketAddr,
}

fn start_run(
    emulator: &Emulator,
    upstream: &str,
    extra_toml: &str,
    dir: &std::path::Path,
) -> RunningSidecar {
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n[egress]\nlisten = \"\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[jtl]\nclient_id = \"emulated-client\"\nclient_secret = \"emulated-secret\"\ntoken_url = \"{}\"\napi_base_url = \"{}\"\n[tenants]\ndatabase_url = \"sqlite://{}\"\n{extra_toml}",
            emulator.token_url(),
            emulator.api_base_url(),
            dir.join("jtl-tenants.db").display()
        ),
    )
    .unwrap();
    let mut child = sidecar()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let listening: serde_json::Value =
        serde_json::from_str(&next_line_matching(&lines, |l| l.contains("is listening")))
            .expect("JSON log line");
    let ingress: SocketAddr = listening["ingress"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = listening["admin"].as_str().unwrap().parse().unwrap();
    RunningSidecar {
        child,
        lines,
        ingress,
        admin,
    }
}

/// Polls `/readyz` for up to 5 s; true once it answered 200.
async fn became_ready(admin: SocketAddr) -> bool {
    let readyz = format!("http://{admin}/readyz");
    for _ in 0..200 {
        if status_of(&readyz, None)
            .await
            .is_ok_and(|(status, _)| status == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    let emulator = Emulator::start(EmulatorOptions::default(), Clock::system())
        .await
        .unwrap();
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let backend = slow_backend(Duration::from_millis(1500), arrived.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // The stdout reader stays alive (`_lines`), so the sidecar's log writes never block.
    let RunningSidecar {
        mut child,
        lines: _lines,
        ingress,
        admin,
    } = start_run(
        &emulator,
        &format!("http://{backend}"),
        "[server]\nshutdown_grace_s = 10\n",
        dir.path(),
    );
    let readyz = format!("http://{admin}/readyz");
    assert!(became_ready(admin).await, "the sidecar became ready");

    let token = emulator
        .mint_session_token(
            DEV_TENANT_ID,
            "9b8a7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d",
            "shop",
            Duration::from_secs(600),
        )
        .unwrap();
    let in_flight = tokio::spawn({
        let url = format!("http://{ingress}/slow");
        async move { status_of(&url, Some(&token)).await }
    });
    // SIGTERM once the request is at the backend, so it is truly in flight.
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .expect("the request reached the backend");
    terminate(&child);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Readiness fails at once and new connections are refused during the drain.
    let (status, body) = status_of(&readyz, None)
        .await
        .expect("admin answers during the drain");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("shutting_down"));
    assert!(
        tokio::net::TcpStream::connect(ingress).await.is_err(),
        "new connections are refused"
    );

    // The request in flight completes.
    let (status, body) = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((status, body.as_ref()), (200, &b"done"[..]));
    assert_eq!(wait_for_exit(&mut child), Some(0));
}

#[test]
fn run_exits_2_for_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[ingress]\nupstream = \"nope\"\n").unwrap();
    let output = sidecar()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ingress.upstream: not an http(s) URL")
    );
}

/// Runs with `key` (`ingress.listen` or `egress.listen`) on a port already taken; the
/// other listeners on free ports. Asserts exit code 1 and the key in the message.
fn assert_run_exits_1_when_port_taken(key: &str) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("\"{}\"", taken.local_addr().unwrap());
    let free = "\"127.0.0.1:0\"".to_owned();
    let (ingress, egress) = if key == "ingress.listen" {
        (taken, free)
    } else {
        (free, taken)
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nlisten = {ingress}\n[egress]\nlisten = {egress}\n[admin]\nlisten = \"127.0.0.1:0\"\n[jtl]\nclient_id = \"a\"\nclient_secret = \"b\"\n"
        ),
    )
    .unwrap();
    let output = sidecar()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{key}: cannot listen on")),
        "{stderr}"
    );
}

#[test]
fn run_exits_1_when_a_port_is_taken() {
    assert_run_exits_1_when_port_taken("ingress.listen");
}

#[test]
fn run_exits_1_when_the_egress_port_is_taken() {
    assert_run_exits_1_when_port_taken("egress.listen");
}

/// `dev` with `args`, every listener (and the emulator) on a free port, so it never
/// clashes with a `dev` on the default ports or with other tests.
fn start_dev(args: &[&str]) -> Child {
    let mut command = sidecar();
    command
        .arg("dev")
        .args(args)
        .env("JTL_SIDECAR_INGRESS__LISTEN", "127.0.0.1:0")
        .env("JTL_SIDECAR_ADMIN__LISTEN", "127.0.0.1:0")
        .env("JTL_SIDECAR_EGRESS__LISTEN", "127.0.0.1:0")
        .env("JTL_SIDECAR_INGRESS__UPSTREAM", "http://127.0.0.1:0")
        .env(
            "JTL_SIDECAR_JTL__TOKEN_URL",
            "http://127.0.0.1:0/oauth2/token",
        )
        .env("JTL_SIDECAR_JTL__API_BASE_URL", "http://127.0.0.1:0");
    if args.contains(&"app-token") {
        // The app-token flow's emulator listens on the port of session.issuer, and
        // jtl.token_url follows from the issuer.
        command
            .env("JTL_SIDECAR_SESSION__ISSUER", "http://127.0.0.1:0")
            .env_remove("JTL_SIDECAR_JTL__TOKEN_URL");
    }
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs a printed command with `sh -c`; its stdout.
fn sh(command: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .expect("sh");
    assert!(output.status.success(), "{command}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs the first printed `curl` until the sidecar forwards it (the service token and
/// key set are fetched in the background); the echo backend's answer.
fn first_answer(first: &str) -> serde_json::Value {
    let mut answer = String::new();
    for _ in 0..100 {
        answer = sh(first.trim());
        if answer.contains("x-tenant-id") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[test]
fn dev_prints_a_curl_command_that_works() {
    let mut child = start_dev(&[]);
    let lines = lines_of(&mut child);
    let first = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let spoofed = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let egress = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let mint = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s 'http"));
    let connect = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s -X POST"));

    let echoed = first_answer(&first);
    assert_eq!(
        echoed["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );
    assert!(echoed["headers"].get("x-session-token").is_none());

    let echoed: serde_json::Value = serde_json::from_str(&sh(spoofed.trim())).unwrap();
    assert_eq!(
        echoed["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );

    // The egress command reaches the emulator's API echo with the access token injected.
    let echoed: serde_json::Value = serde_json::from_str(&sh(egress.trim())).unwrap();
    assert_eq!(echoed["path"], "/v1/hello");
    assert_eq!(
        echoed["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );
    assert!(echoed["headers"]["authorization"][0]
        .as_str()
        .is_some_and(|value| value.starts_with("Bearer ")));

    let minted = sh(mint.trim());
    assert_eq!(
        minted.trim().split('.').count(),
        3,
        "a fresh token: {minted}"
    );

    // The connect-tenant command is answered by the sidecar, with the dev tenant.
    let connected: serde_json::Value = serde_json::from_str(&sh(connect.trim())).unwrap();
    assert_eq!(connected["success"], true, "{connected}");
    assert_eq!(connected["tenantId"], DEV_TENANT_ID);

    terminate(&child);
    assert_eq!(wait_for_exit(&mut child), Some(0));
}

#[test]
fn dev_flow_app_token_prints_a_curl_command_that_works() {
    let mut child = start_dev(&["--flow", "app-token"]);
    let lines = lines_of(&mut child);
    let heading = next_line_matching(&lines, |l| l.starts_with("jtl-auth-sidecar dev is running"));
    assert!(heading.contains("app-token"), "{heading}");
    let first = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let spoofed = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let egress = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let mint = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s 'http"));
    let connect = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s -X POST"));
    let app_token = first
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the first curl carries a token")
        .to_owned();
    assert_eq!(app_token.split('.').count(), 3, "an app token: {first}");
    let emulator = mint
        .split('\'')
        .nth(1)
        .and_then(|url| url.split(APP_TOKEN_MINT_PATH).next())
        .expect("the mint command names the emulator")
        .to_owned();
    assert!(
        mint.contains(&format!(
            "{APP_TOKEN_MINT_PATH}?tenantId={DEV_TENANT_ID}&sub={DEV_APP_USER_ID}'"
        )),
        "{mint}"
    );

    // The backend gets the tenant and the numeric Zitadel user, no slug, and the service
    // account's opaque access token from the emulator's Zitadel instead of the app token.
    let echoed = first_answer(&first);
    let headers = &echoed["headers"];
    assert_eq!(headers["x-tenant-id"], serde_json::json!([DEV_TENANT_ID]));
    assert_eq!(headers["x-user-id"], serde_json::json!([DEV_APP_USER_ID]));
    assert!(headers.get("x-tenant-slug").is_none(), "{echoed}");
    let forwarded = headers["authorization"][0]
        .as_str()
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("a bearer for the backend: {echoed}"))
        .to_owned();
    assert_ne!(forwarded, app_token);
    assert!(!forwarded.contains('.'), "opaque, not a JWT: {forwarded}");
    let api_status = |token: &str| {
        sh(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' {emulator}/v1/whoami -H 'Authorization: Bearer {token}'"
        ))
    };
    assert_eq!(api_status(&forwarded), "200", "the emulator issued it");
    assert_eq!(api_status(&app_token), "401");

    let echoed: serde_json::Value = serde_json::from_str(&sh(spoofed.trim())).unwrap();
    assert_eq!(
        echoed["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );

    // Egress: the emulator's API answers (it checks the bearer) with the service token.
    let echoed: serde_json::Value = serde_json::from_str(&sh(egress.trim())).unwrap();
    assert_eq!(echoed["path"], "/v1/hello", "{echoed}");
    assert!(echoed["headers"]["authorization"][0]
        .as_str()
        .is_some_and(|value| value.starts_with("Bearer ") && !value.contains(&app_token)));

    // A minted token works like the printed one.
    let minted = sh(mint.trim());
    let minted = minted.trim();
    assert_eq!(minted.split('.').count(), 3, "a fresh app token: {minted}");
    let echoed = first_answer(&first.replace(&app_token, minted));
    assert_eq!(
        echoed["headers"]["x-user-id"],
        serde_json::json!([DEV_APP_USER_ID])
    );

    let connected: serde_json::Value = serde_json::from_str(&sh(connect.trim())).unwrap();
    assert_eq!(connected["success"], true, "{connected}");
    assert_eq!(connected["tenantId"], DEV_TENANT_ID);
    assert_eq!(connected["userId"], DEV_APP_USER_ID);
    assert!(connected.get("tenantSlug").is_none(), "{connected}");

    terminate(&child);
    assert_eq!(wait_for_exit(&mut child), Some(0));
}

#[test]
fn dev_refuses_an_unknown_flow_with_exit_2() {
    let output = sidecar()
        .args(["dev", "--flow", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--flow") && stderr.contains("nonsense"),
        "{stderr}"
    );
    assert!(
        stderr.contains("session-token") && stderr.contains("app-token"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

/// The request log line of a refused token carries the sentence of the 401, the one
/// `check --online --session-token` starts its verdict with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_logged_with_the_reason_check_online_prints() {
    let emulator = Emulator::start(EmulatorOptions::default(), Clock::system())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let RunningSidecar {
        mut child,
        lines,
        ingress,
        admin,
    } = start_run(&emulator, "http://127.0.0.1:1", "", dir.path());
    became_ready(admin).await;

    let mut claims = emulator.session_claims(
        DEV_TENANT_ID,
        "9b8a7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d",
        "shop",
        Duration::from_secs(600),
    );
    claims["exp"] = serde_json::json!(Clock::system().now_s() - 200);
    let kid = emulator.default_kid().unwrap();
    let token = emulator.mint(&claims, &kid, false).unwrap();
    let (status, _) = status_of(&format!("http://{ingress}/orders"), Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let line = next_line_matching(&lines, |l| l.contains("\"outcome\":\"invalid_token\""));
    let _ = child.kill();
    let _ = child.wait();
    let logged: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let fields = logged.get("fields").unwrap_or(&logged);
    assert_eq!(fields["reason"], "The session token has expired.", "{line}");
    assert!(!line.contains(&token), "{line}");
}
