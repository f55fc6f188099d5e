//! The binary as an operator runs it: `run` (exit codes, SIGTERM drain) and `dev`.

#[path = "../common/mod.rs"]
mod common;

mod budgets;
mod connections;
mod dev;
mod log;
mod run;

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
    APP_TOKEN_MINT_PATH, DEV_APP_USER_ID, DEV_TENANT_ID, DEV_TENANT_SLUG, Emulator, EmulatorOptions,
};

fn sidecar() -> Command {
    sidecar_through(&[])
}

/// The binary, run through `wrapper` when one is given (e.g. `prlimit --nofile=… --`),
/// with no `JTL_SIDECAR_*` or `RUST_LOG` from this environment.
fn sidecar_through(wrapper: &[&str]) -> Command {
    let binary = env!("CARGO_BIN_EXE_jtl-auth-sidecar");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
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

/// Polls the child (a process has no exit event to await here) for at most the patience.
fn wait_for_exit(child: &mut Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + common::harness::patience();
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!(
        "the sidecar did not exit within {:?}",
        common::harness::patience()
    );
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
                        // Slow on purpose: the request in flight under test.
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
    /// `None` when egress is off (the file's default here).
    egress: Option<SocketAddr>,
}

fn start_run(
    emulator: &Emulator,
    upstream: &str,
    extra_toml: &str,
    dir: &std::path::Path,
) -> RunningSidecar {
    start_run_with(&[], emulator, upstream, extra_toml, dir)
}

/// [`start_run`] with the binary run through `wrapper` (e.g. `prlimit --nofile=…  --`).
fn start_run_with(
    wrapper: &[&str],
    emulator: &Emulator,
    upstream: &str,
    extra_toml: &str,
    dir: &std::path::Path,
) -> RunningSidecar {
    start_run_with_env(wrapper, emulator, upstream, extra_toml, dir, &[])
}

/// [`start_run_with`] with environment variables for the child (config overrides such
/// as `JTL_SIDECAR_EGRESS__LISTEN`, for keys of a section the file already has).
fn start_run_with_env(
    wrapper: &[&str],
    emulator: &Emulator,
    upstream: &str,
    extra_toml: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> RunningSidecar {
    let mut child = spawn_run(wrapper, emulator, upstream, extra_toml, dir, env);
    let lines = lines_of(&mut child);
    let (ingress, admin, egress) =
        listening_addresses(&next_line_matching(&lines, |l| l.contains("is listening")));
    RunningSidecar {
        child,
        lines,
        ingress,
        admin,
        egress,
    }
}

/// `run` started as [`start_run_with_env`] describes, its stdout a pipe not read yet.
fn spawn_run(
    wrapper: &[&str],
    emulator: &Emulator,
    upstream: &str,
    extra_toml: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Child {
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
    // These tests run against the emulator's legacy IdP: session tokens, unless the
    // test names its flow.
    let legacy = (!extra_toml.contains("flow")
        && !env.iter().any(|(name, _)| name.contains("FLOW")))
    .then_some(("JTL_SIDECAR_SESSION__FLOW", "session-token"));
    sidecar_through(wrapper)
        .envs(env.iter().copied())
        .envs(legacy)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The ingress, admin and egress (`None` when off) addresses of the "is listening" line.
fn listening_addresses(line: &str) -> (SocketAddr, SocketAddr, Option<SocketAddr>) {
    let listening: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    let ingress: SocketAddr = listening["ingress"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = listening["admin"].as_str().unwrap().parse().unwrap();
    let egress = listening["egress"].as_str().map(|e| e.parse().unwrap());
    (ingress, admin, egress)
}

/// Polls `/readyz` for up to 5 s (scaled by the test patience); true once it answered 200.
async fn became_ready(admin: SocketAddr) -> bool {
    let readyz = format!("http://{admin}/readyz");
    let deadline = std::time::Instant::now() + common::harness::scaled(Duration::from_secs(5));
    while std::time::Instant::now() < deadline {
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

/// A session token of the emulator's dev tenant, valid for 10 minutes.
fn dev_session_token(emulator: &Emulator) -> String {
    emulator
        .mint_session_token(
            DEV_TENANT_ID,
            "9b8a7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d",
            "shop",
            Duration::from_secs(600),
        )
        .unwrap()
}

/// The value of one sample of the Prometheus text `text`, named with its labels.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|line| {
            line.starts_with(name_and_labels) && line[name_and_labels.len()..].starts_with(' ')
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// What must live as long as the `run` process of [`ready_in_front_of_a_backend`].
struct KeptAlive {
    _emulator: Emulator,
    _dir: tempfile::TempDir,
    /// The stdout reader stays alive, so the sidecar's log writes never block.
    _lines: mpsc::Receiver<String>,
}

/// A `run` process that is ready, with a valid session token for it.
struct ReadySidecar {
    kept: KeptAlive,
    child: Child,
    ingress: SocketAddr,
    admin: SocketAddr,
    egress: Option<SocketAddr>,
    token: String,
}

/// `run` (through `wrapper`, see [`start_run_with`]) with `extra_toml` and `env`, in front
/// of a backend answering "done" after `backend_delay`, ready.
async fn ready_in_front_of_a_backend(
    wrapper: &[&str],
    extra_toml: &str,
    backend_delay: Duration,
    env: &[(&str, &str)],
) -> ReadySidecar {
    let emulator = Emulator::start(EmulatorOptions::default(), Clock::system())
        .await
        .unwrap();
    let backend = slow_backend(
        backend_delay,
        std::sync::Arc::new(tokio::sync::Notify::new()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let RunningSidecar {
        child,
        lines,
        ingress,
        admin,
        egress,
    } = start_run_with_env(
        wrapper,
        &emulator,
        &format!("http://{backend}"),
        extra_toml,
        dir.path(),
        env,
    );
    assert!(became_ready(admin).await, "the sidecar became ready");
    let token = dev_session_token(&emulator);
    ReadySidecar {
        kept: KeptAlive {
            _emulator: emulator,
            _dir: dir,
            _lines: lines,
        },
        child,
        ingress,
        admin,
        egress,
        token,
    }
}
