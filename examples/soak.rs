//! Soak benchmark driver (not in CI): `bash benches/soak.sh [MINUTES]` builds and runs it.
//!
//!   target/release/examples/soak [MINUTES] [--results FILE] [--bin SIDECAR]
//!
//! In this process: the JTL emulator (access tokens living `EXPIRES_IN_S`), a backend that
//! answers 200 to everything, and `CONNECTIONS` keep-alive HTTP/1.1 connections sending
//! requests without pause, each with a freshly minted session token. The sidecar is the
//! release binary, started as `run --config FILE` (log level warn) in a process of its own.
//!
//! Timeline, t = 0 when the sidecar's /readyz first answers 200 (it then holds an access
//! token and the key set): load from 0 to D = 60 * MINUTES s; a key rotation every
//! `ROTATION_EVERY_S` at 60, 120, ..., D - 60 (rotation k publishes kid k, switches minting
//! to it, withdraws kid k-2 from the published set and deletes kid k-3, so kid k-1 stays as
//! the overlap); the sidecar's VmRSS sampled every `SAMPLE_EVERY_S`; the emulator's counters
//! read at t = D + `SETTLE_S`; then /metrics, one request with the kid withdrawn last (it
//! must get 401), and a SIGTERM (the sidecar must exit 0).
//!
//! Expectations (the exit status is 1 when one fails):
//! - every request is answered 200 (a non-200 or a transport error is a failure): the
//!   driver switches minting to the new kid before the previous one leaves the set, and a
//!   token of a kid the sidecar has not fetched yet waits for the refetch it triggers;
//! - VmRSS after the warm-up (the first `WARM_UP_S` of load, in which the verified-token
//!   cache fills up, since every token is new) stays within 10 %: max <= 1.10 x min;
//! - access-token and key-set requests counted by the emulator equal the predictions of
//!   [`predict_token_requests`] and [`predict_key_set_requests`], which follow from the
//!   configured intervals and SPEC §6.
//!
//! Why the predictions are exact with this configuration (MINUTES = N, read at
//! t_read = 60N + 10 s):
//! - Access token: requested once at start, then refreshed min(refresh_before_expiry_s,
//!   expires_in / 2) before it expires, counted from each response: every
//!   30 - min(10, 15) = 20 s. Requests by t_read: 1 + floor(t_read / 20) = 1 + 3N. t_read is
//!   10 s from the refreshes either side, so the few ms each refresh adds (its own latency)
//!   cannot move one across it.
//! - Key set: one fetch at start; a periodic refresh `jwks_refresh_interval_s` = 40 s after
//!   the latest fetch; at each rotation the first token of the new kid names a kid the
//!   sidecar does not hold, which triggers one refetch (concurrent misses share it): the
//!   latest fetch was the periodic one 20 s before, more than `jwks_min_refetch_interval_s`
//!   = 10 s, so it is permitted at once, and it restarts the 40 s period. Every minute thus
//!   has one periodic fetch (at +40 s) and every minute after the first one refetch (at its
//!   start): 1 + N + (N - 1) = 2N by t_read (the next periodic one is due at 60N + 20). No
//!   two of these events are closer than 10 s, so nothing depends on ms of jitter.
//!
//! The prediction functions simulate that schedule for any constants and refuse (panic)
//! when an event falls within `MARGIN_S` of another it must be ordered against.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions};
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 32;
/// `expires_in` of the emulator's access tokens.
const EXPIRES_IN_S: u64 = 30;
const REFRESH_BEFORE_EXPIRY_S: u64 = 10;
const JWKS_REFRESH_INTERVAL_S: u64 = 40;
const JWKS_MIN_REFETCH_INTERVAL_S: u64 = 10;
const ROTATION_EVERY_S: u64 = 60;
const SAMPLE_EVERY_S: u64 = 5;
/// Load time excluded from the RSS expectation (the verified cache fills, arenas grow).
const WARM_UP_S: u64 = 60;
/// The emulator's counters are read this long after the load ends.
const SETTLE_S: u64 = 10;
/// How far (s) an event must be from another it is ordered against for an exact count.
const MARGIN_S: f64 = 5.0;
/// Lifetime of the session tokens minted for the load.
const SESSION_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_MINUTES: u64 = 120;
const RSS_TOLERANCE: f64 = 0.10;

const TENANT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const SLUG: &str = "soak-shop";

fn kid(n: u64) -> String {
    format!("soak-key-{n}")
}

/// Access-token requests by `read_at_s`: one at start, then one per refresh period, which
/// is the lifetime less min(refresh_before, lifetime / 2) (SPEC §6; src/jtl/access_token.rs).
fn predict_token_requests(read_at_s: f64, expires_in_s: u64, refresh_before_s: u64) -> u64 {
    let lifetime_ms = expires_in_s * 1000;
    let period_s = (lifetime_ms - (refresh_before_s * 1000).min(lifetime_ms / 2)) as f64 / 1000.0;
    let refreshes = (read_at_s / period_s).floor();
    let margin = (read_at_s - refreshes * period_s).min((refreshes + 1.0) * period_s - read_at_s);
    assert!(
        margin >= MARGIN_S,
        "read at {read_at_s} s is {margin} s from a token refresh: the count would not be exact"
    );
    1 + refreshes as u64
}

/// Key-set requests by `read_at_s`: one at start, a periodic refresh `interval_s` after
/// the latest fetch, and at each rotation one refetch for the unknown kid, at once when
/// `min_refetch_s` has passed since the latest fetch, else when it has (SPEC §6).
fn predict_key_set_requests(
    read_at_s: f64,
    interval_s: f64,
    min_refetch_s: f64,
    rotations_s: &[f64],
) -> u64 {
    let mut count = 1;
    let mut last = 0.0_f64;
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() >= MARGIN_S,
            "{what}: {a} s and {b} s are too close for an exact count"
        );
    };
    for &rotation in rotations_s {
        while last + interval_s < rotation {
            last += interval_s;
            count += 1;
            close(last, rotation, "a periodic key-set refresh and a rotation");
        }
        close(
            last + interval_s,
            rotation,
            "a periodic key-set refresh and a rotation",
        );
        close(
            last + min_refetch_s,
            rotation,
            "the refetch limit and a rotation",
        );
        last = rotation.max(last + min_refetch_s);
        count += 1;
    }
    while last + interval_s < read_at_s {
        last += interval_s;
        count += 1;
    }
    close(
        last + interval_s,
        read_at_s,
        "a periodic key-set refresh and the read",
    );
    count
}

/// What the load workers share.
struct Load {
    emulator: Emulator,
    /// The kid new tokens are signed with (and name in their header).
    kid: RwLock<String>,
    ingress: SocketAddr,
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    connections: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    /// Tokens minted: a `jti` per token. Without it a token is a function of (user, kid,
    /// second) alone (`iat`/`exp` are whole seconds, EdDSA signatures deterministic), so
    /// the 32 workers would send only 32 distinct tokens a second and the verified cache
    /// would fill for 52 minutes, which looked like growing memory.
    minted: AtomicU64,
}

impl Load {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.failures.lock().unwrap().entry(why).or_default() += 1;
    }

    fn token(&self, user: &str) -> Option<String> {
        let kid = self.kid.read().unwrap().clone();
        let mut claims = self
            .emulator
            .session_claims(TENANT, user, SLUG, SESSION_TOKEN_LIFETIME);
        claims["jti"] = self.minted.fetch_add(1, Ordering::Relaxed).into();
        self.emulator.mint(&claims, &kid, true)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Request<Empty<Bytes>> {
    let mut request = Request::get(path).header(HOST, addr.to_string());
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Empty::new()).expect("a valid request")
}

/// One request on `sender`: its status, or why there is none.
async fn send(
    sender: &mut Sender,
    request: Request<Empty<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
}

/// A one-off GET on a new connection (admin endpoints, the final check).
async fn fetch(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(StatusCode, String), String> {
    let mut sender = connect(addr).await?;
    let (status, body) = send(&mut sender, get(addr, path, token)).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One keep-alive connection sending requests back to back until `stop`.
async fn worker(load: Arc<Load>, n: usize) {
    let user = format!("00000000-0000-4000-8000-{n:012}");
    while !load.stop.load(Ordering::Relaxed) {
        let mut sender = match connect(load.ingress).await {
            Ok(sender) => sender,
            Err(e) => {
                load.fail(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        load.connections.fetch_add(1, Ordering::Relaxed);
        while !load.stop.load(Ordering::Relaxed) {
            if sender.ready().await.is_err() {
                break; // closed by the sidecar between requests: a new connection
            }
            let Some(token) = load.token(&user) else {
                load.fail("minting: the kid is gone".into());
                continue;
            };
            match send(&mut sender, get(load.ingress, "/soak", Some(&token))).await {
                Ok((StatusCode::OK, _)) => {
                    load.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok((status, _)) => load.fail(format!("HTTP {status}")),
                Err(e) => {
                    load.fail(format!("transport: {e}"));
                    break;
                }
            }
        }
    }
}

/// The backend: 200 with an empty body to every request, counted.
async fn backend(listener: TcpListener, hits: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let hits = Arc::clone(&hits);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request| {
                hits.fetch_add(1, Ordering::Relaxed);
                async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The sidecar process, killed when dropped (the driver panicking or interrupted).
struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of a process.
fn cpu_s(pid: u32, ticks_per_s: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / ticks_per_s
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// UTC "YYYY-MM-DD HH:MM" (Howard Hinnant's days-to-civil).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

struct Sample {
    t_s: f64,
    rss_kb: u64,
    requests: u64,
    load_average: f64,
}

/// The value of the sample `name_and_labels` in a /metrics text.
fn metric(text: &str, name_and_labels: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == name_and_labels).then(|| value.parse::<f64>().ok().map(|v| v as u64))?
    })
}

fn mean_mb(samples: &[&Sample]) -> f64 {
    samples.iter().map(|s| s.rss_kb as f64).sum::<f64>() / samples.len().max(1) as f64 / 1024.0
}

struct Args {
    minutes: u64,
    results: Option<PathBuf>,
    bin: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut minutes = 10;
    let mut results = None;
    let mut bin = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--results" => results = Some(PathBuf::from(args.next().ok_or("--results FILE")?)),
            "--bin" => bin = Some(PathBuf::from(args.next().ok_or("--bin SIDECAR")?)),
            number => {
                minutes = number
                    .parse()
                    .ok()
                    .filter(|m| (1..=MAX_MINUTES).contains(m))
                    .ok_or(format!("MINUTES must be 1..={MAX_MINUTES}, not {number:?}"))?
            }
        }
    }
    // target/release/examples/soak -> target/release/jtl-auth-sidecar
    let bin = match bin {
        Some(bin) => bin,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .and_then(Path::parent)
            .ok_or("no target directory")?
            .join("jtl-auth-sidecar"),
    };
    Ok(Args {
        minutes,
        results,
        bin,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("usage: soak [MINUTES] [--results FILE] [--bin SIDECAR]: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler");
        tokio::select! {
            code = soak(args) => code,
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted"); 130 }
            _ = terminate.recv() => { eprintln!("terminated"); 143 }
        }
    });
    // When a signal wins the select, `soak`'s future is dropped there, and with it the
    // sidecar process (killed by `Sidecar`'s Drop).
    drop(runtime);
    std::process::exit(code);
}

async fn soak(args: Args) -> i32 {
    let duration_s = args.minutes * 60;
    let read_at_s = (duration_s + SETTLE_S) as f64;
    let rotations: Vec<u64> = (1..args.minutes).collect();
    let rotations_s: Vec<f64> = rotations
        .iter()
        .map(|k| (k * ROTATION_EVERY_S) as f64)
        .collect();
    let predicted_tokens = predict_token_requests(read_at_s, EXPIRES_IN_S, REFRESH_BEFORE_EXPIRY_S);
    let predicted_keys = predict_key_set_requests(
        read_at_s,
        JWKS_REFRESH_INTERVAL_S as f64,
        JWKS_MIN_REFETCH_INTERVAL_S as f64,
        &rotations_s,
    );
    let ticks_per_s: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let started_at = utc_now();
    let load_average_before = load_average();

    // JTL.
    let emulator = Emulator::start(
        EmulatorOptions {
            expires_in: Some(EXPIRES_IN_S),
            key_ids: vec![kid(0)],
            ..EmulatorOptions::default()
        },
        Clock::system(),
    )
    .await
    .expect("the emulator starts");

    // The backend.
    let backend_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("backend port");
    let backend_addr = backend_listener.local_addr().expect("backend address");
    let backend_hits = Arc::new(AtomicU64::new(0));
    tokio::spawn(backend(backend_listener, Arc::clone(&backend_hits)));

    // The sidecar.
    let dir = std::env::temp_dir().join(format!("jtl-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a work directory");
    let ingress: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        r#"[ingress]
listen = "{ingress}"
upstream = "http://{backend_addr}"
[egress]
listen = ""
[jtl]
client_id = "emulated-client"
client_secret = "emulated-secret"
token_url = "{token_url}"
api_base_url = "{api_base_url}"
refresh_before_expiry_s = {REFRESH_BEFORE_EXPIRY_S}
[session]
jwks_refresh_interval_s = {JWKS_REFRESH_INTERVAL_S}
jwks_min_refetch_interval_s = {JWKS_MIN_REFETCH_INTERVAL_S}
[tenants]
database_url = "sqlite://{db}"
[admin]
listen = "{admin}"
[log]
level = "warn"
[server]
shutdown_grace_s = 5
"#,
        token_url = emulator.token_url(),
        api_base_url = emulator.api_base_url(),
        db = dir.join("tenants.db").display(),
    );
    let config_path = dir.join("sidecar.toml");
    std::fs::write(&config_path, &config).expect("the config file");
    let log_path = dir.join("sidecar.log");
    let log = std::fs::File::create(&log_path).expect("the log file");
    let child = Command::new(&args.bin)
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.bin.display()));
    let mut sidecar = Sidecar(child);
    let pid = sidecar.0.id();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = sidecar.0.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("the sidecar exited at start ({status}):\n{log}");
        }
        if let Ok((StatusCode::OK, _)) = fetch(admin, "/readyz", None).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar was not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let tokens_at_start = emulator.token_requests();
    let keys_at_start = emulator.jwks_requests();
    let cpu_at_start = cpu_s(pid, ticks_per_s);
    println!(
        "== soak: {} min, {CONNECTIONS} connections, sidecar pid {pid}, ready with {tokens_at_start} token and {keys_at_start} key-set requests",
        args.minutes
    );

    let load = Arc::new(Load {
        emulator,
        kid: RwLock::new(kid(0)),
        ingress,
        stop: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        failures: Mutex::new(BTreeMap::new()),
        minted: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|n| tokio::spawn(worker(Arc::clone(&load), n)))
        .collect();

    // Rotations, as JTL would: publish the new kid, sign with it, and only then take the
    // kid before the previous one out of the set (the previous one stays as the overlap,
    // so tokens signed just before the switch remain valid). Kid k-2 is withdrawn (kept
    // here for the final 401 check), kid k-3 deleted.
    let rotator = {
        let load = Arc::clone(&load);
        tokio::spawn(async move {
            for k in rotations {
                tokio::time::sleep_until((t0 + Duration::from_secs(k * ROTATION_EVERY_S)).into())
                    .await;
                let keys_before = load.emulator.jwks_requests();
                load.emulator.add_key(&kid(k));
                *load.kid.write().unwrap() = kid(k);
                if k >= 2 {
                    load.emulator.set_published(&kid(k - 2), false);
                }
                if k >= 3 {
                    load.emulator.remove_key(&kid(k - 3));
                }
                println!(
                    "   t={:5.1} s  rotation {k}: signing with {}, published {:?}, key-set requests so far {keys_before}",
                    t0.elapsed().as_secs_f64(),
                    kid(k),
                    load.emulator.jwks()["keys"]
                        .as_array()
                        .map(|keys| {
                            keys.iter()
                                .filter_map(|key| key["kid"].as_str().map(str::to_owned))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                );
            }
        })
    };

    // Samples until the load ends.
    let mut samples = Vec::new();
    let mut next = t0;
    while next <= t0 + Duration::from_secs(duration_s) {
        tokio::time::sleep_until(next.into()).await;
        let sample = Sample {
            t_s: t0.elapsed().as_secs_f64(),
            rss_kb: proc_status_kb(pid, "VmRSS:").unwrap_or(0),
            requests: load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed),
            load_average: load_average(),
        };
        if sample.t_s as u64 % 60 < SAMPLE_EVERY_S {
            println!(
                "   t={:5.1} s  VmRSS {:6.1} MB  requests {:9}  failed {}",
                sample.t_s,
                sample.rss_kb as f64 / 1024.0,
                sample.requests,
                load.failed.load(Ordering::Relaxed)
            );
        }
        samples.push(sample);
        next += Duration::from_secs(SAMPLE_EVERY_S);
    }
    load.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let load_s = t0.elapsed().as_secs_f64();
    let _ = rotator.await;
    let cpu_used = cpu_s(pid, ticks_per_s) - cpu_at_start;
    let peak_kb = proc_status_kb(pid, "VmHWM:").unwrap_or(0);

    tokio::time::sleep_until((t0 + Duration::from_secs_f64(read_at_s)).into()).await;
    let read_s = t0.elapsed().as_secs_f64();
    let token_requests = load.emulator.token_requests();
    let key_set_requests = load.emulator.jwks_requests();
    let metrics = fetch(admin, "/metrics", None)
        .await
        .map(|(_, body)| body)
        .unwrap_or_else(|e| format!("(no /metrics: {e})"));

    // A token of the kid withdrawn at the last rotation is refused, at the cost of the one
    // refetch its unknown kid permits (the last fetch is 30 s old).
    let removal_check = match args.minutes.checked_sub(3) {
        Some(k) => {
            let claims = load.emulator.session_claims(
                TENANT,
                "00000000-0000-4000-8000-999999999999",
                SLUG,
                SESSION_TOKEN_LIFETIME,
            );
            let token = load
                .emulator
                .mint(&claims, &kid(k), true)
                .expect("the withdrawn kid is kept for minting");
            let answer = fetch(ingress, "/soak", Some(&token)).await;
            let refetches = load.emulator.jwks_requests() - key_set_requests;
            let ok = matches!(answer, Ok((StatusCode::UNAUTHORIZED, _))) && refetches == 1;
            Some((
                kid(k),
                answer.map(|(status, _)| status.as_u16()),
                refetches,
                ok,
            ))
        }
        None => None,
    };

    // Graceful stop.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let stop_deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        match sidecar.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            _ if Instant::now() > stop_deadline => break None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    drop(sidecar);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);

    // Figures.
    let ok = load.ok.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    let requests = ok + failed;
    let hits = backend_hits.load(Ordering::Relaxed);
    let after_warm_up: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= WARM_UP_S as f64 - 0.5)
        .collect();
    let warm_up: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s < WARM_UP_S as f64 - 0.5)
        .collect();
    let first_minute: Vec<&Sample> = after_warm_up
        .iter()
        .copied()
        .filter(|s| s.t_s < (WARM_UP_S + 60) as f64 - 0.5)
        .collect();
    let last_minute: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= (duration_s - 60) as f64 - 0.5)
        .collect();
    let rss_min = after_warm_up.iter().map(|s| s.rss_kb).min().unwrap_or(0);
    let rss_max = after_warm_up.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let rss_spread = rss_max as f64 / rss_min.max(1) as f64 - 1.0;
    let load_averages: Vec<f64> = samples.iter().map(|s| s.load_average).collect();
    let load_average_mean = load_averages.iter().sum::<f64>() / load_averages.len().max(1) as f64;
    let load_average_max = load_averages.iter().copied().fold(0.0, f64::max);
    let log_lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();

    let mut checks: Vec<(String, bool)> = vec![
        (format!("failed requests: {failed} (expected 0)"), failed == 0),
        (
            format!("backend hits {hits} = requests answered 200 ({ok})"),
            hits == ok,
        ),
        (
            format!(
                "VmRSS after the {WARM_UP_S} s warm-up: min {:.1} MB, max {:.1} MB, spread {:.1} % (expected <= {:.0} %)",
                rss_min as f64 / 1024.0,
                rss_max as f64 / 1024.0,
                rss_spread * 100.0,
                RSS_TOLERANCE * 100.0
            ),
            !after_warm_up.is_empty() && rss_spread <= RSS_TOLERANCE,
        ),
        (
            format!("access-token requests: {token_requests} (predicted {predicted_tokens})"),
            token_requests == predicted_tokens,
        ),
        (
            format!("key-set requests: {key_set_requests} (predicted {predicted_keys})"),
            key_set_requests == predicted_keys,
        ),
        (
            format!(
                "at readiness: {tokens_at_start} token and {keys_at_start} key-set request (expected 1 and 1)"
            ),
            tokens_at_start == 1 && keys_at_start == 1,
        ),
        (
            format!("the sidecar exited after SIGTERM with {exit:?} (expected 0)"),
            exit.is_some_and(|status| status.success()),
        ),
    ];
    // The sidecar's own counts agree with the emulator's and the driver's.
    for (line, expected) in [
        (
            "jtl_sidecar_token_fetches_total{result=\"success\"}",
            token_requests,
        ),
        (
            "jtl_sidecar_jwks_fetches_total{result=\"success\"}",
            key_set_requests,
        ),
        (
            "jtl_sidecar_requests_total{listener=\"ingress\",outcome=\"forwarded\",status=\"200\"}",
            ok,
        ),
    ] {
        let seen = metric(&metrics, line);
        checks.push((
            format!("/metrics {line} = {seen:?} (expected {expected})"),
            seen == Some(expected),
        ));
    }
    if let Some((kid, answer, refetches, ok)) = &removal_check {
        checks.push((
            format!("a token of the withdrawn {kid}: {answer:?} after {refetches} key-set request (expected 401 after 1)"),
            *ok,
        ));
    }
    let passed = checks.iter().all(|(_, ok)| *ok);

    let metric_lines: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("jtl_sidecar_requests_total")
                || line.starts_with("jtl_sidecar_token_fetches")
                || line.starts_with("jtl_sidecar_jwks")
        })
        .collect();
    let per_minute: Vec<String> = (0..args.minutes)
        .map(|m| {
            let start = (m * 60) as f64 - 0.5;
            let in_minute: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.t_s >= start && s.t_s < start + 60.0)
                .collect();
            let first = samples.iter().find(|s| s.t_s >= start);
            let end = samples.iter().find(|s| s.t_s >= start + 60.0);
            let done = match (first, end) {
                (Some(a), Some(b)) => b.requests - a.requests,
                _ => 0,
            };
            format!(
                "| {} | {} | {:.0} | {:.1} | {:.1} | {:.2} |",
                m + 1,
                done,
                done as f64 / 60.0,
                mean_mb(&in_minute),
                in_minute.iter().map(|s| s.rss_kb).max().unwrap_or(0) as f64 / 1024.0,
                in_minute.iter().map(|s| s.load_average).sum::<f64>()
                    / in_minute.len().max(1) as f64,
            )
        })
        .collect();

    let mut out = String::new();
    let command = std::env::var("SOAK_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    out += &format!("# Soak run: {} minutes\n\n", args.minutes);
    out += &format!("- date: {started_at}\n- command: `{command}`\n");
    out += &format!(
        "- machine: {} cores, shared with other builds: load average {load_average_before:.2} at start, {load_average_mean:.2} mean / {load_average_max:.2} max during the run. Counts and memory are the figures here; throughput is only indicative under that contention.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out += &format!(
        "- setup: `examples/soak.rs` (emulator, backend answering 200, {CONNECTIONS} keep-alive HTTP/1.1 connections without pause, a fresh EdDSA session token per request) against `target/release/jtl-auth-sidecar run` (log level warn, verified cache at its default 100 000 entries) in a process of its own; access tokens live {EXPIRES_IN_S} s; `refresh_before_expiry_s = {REFRESH_BEFORE_EXPIRY_S}`, `jwks_refresh_interval_s = {JWKS_REFRESH_INTERVAL_S}`, `jwks_min_refetch_interval_s = {JWKS_MIN_REFETCH_INTERVAL_S}`; a key rotation every {ROTATION_EVERY_S} s from t = 60 s ({} in all); VmRSS sampled every {SAMPLE_EVERY_S} s; counters read at t = {read_s:.1} s ({SETTLE_S} s after the load).\n\n",
        rotations_s.len()
    );
    out += "## Results\n\n";
    out += &format!(
        "- requests: {requests} in {load_s:.1} s ({:.0}/s), answered 200: {ok}, failed: {failed}; connections opened: {} for {CONNECTIONS} workers\n",
        requests as f64 / load_s,
        load.connections.load(Ordering::Relaxed)
    );
    if failed > 0 {
        out += &format!("- failures: {:?}\n", load.failures.lock().unwrap());
    }
    out += &format!(
        "- VmRSS (MB): warm-up minute (0-{WARM_UP_S} s, excluded) mean {:.1}; first minute after it mean {:.1}; last minute mean {:.1}; after the warm-up min {:.1} / max {:.1} ({:.1} %); peak (VmHWM) {:.1}\n",
        mean_mb(&warm_up),
        mean_mb(&first_minute),
        mean_mb(&last_minute),
        rss_min as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        rss_spread * 100.0,
        peak_kb as f64 / 1024.0,
    );
    out += &format!(
        "- sidecar CPU: {cpu_used:.1} s in {load_s:.0} s of load ({:.1} µs per request)\n",
        cpu_used * 1e6 / requests.max(1) as f64
    );
    out += &format!(
        "- access-token requests (emulator): {token_requests}, predicted {predicted_tokens} = 1 at start + floor({read_at_s:.0} s / {} s), the refresh period being expires_in - min(refresh_before_expiry_s, expires_in / 2) = {EXPIRES_IN_S} - min({REFRESH_BEFORE_EXPIRY_S}, {}) s\n",
        EXPIRES_IN_S - REFRESH_BEFORE_EXPIRY_S.min(EXPIRES_IN_S / 2),
        EXPIRES_IN_S / 2,
    );
    out += &format!(
        "- key-set requests (emulator): {key_set_requests}, predicted {predicted_keys} = 1 at start + 1 periodic refresh per minute ({JWKS_REFRESH_INTERVAL_S} s after the latest fetch; {} by t = {read_at_s:.0} s) + 1 unknown-kid refetch per rotation ({}: the first token of a new kid, {} s after the latest fetch, more than jwks_min_refetch_interval_s = {JWKS_MIN_REFETCH_INTERVAL_S} s; it restarts the {JWKS_REFRESH_INTERVAL_S} s period)\n",
        predicted_keys - 1 - rotations_s.len() as u64,
        rotations_s.len(),
        ROTATION_EVERY_S - JWKS_REFRESH_INTERVAL_S,
    );
    match &removal_check {
        Some((kid, answer, refetches, _)) => {
            out += &format!("- after counting: a token of {kid} (withdrawn at the last rotation): {answer:?}, after {refetches} key-set request (its unknown kid's one refetch)\n")
        }
        None => out += "- no kid was withdrawn in a run this short (needs 3 minutes): no 401 check\n",
    }
    out += &format!(
        "- sidecar log lines at warn or above: {}{}\n",
        log_lines.len(),
        log_lines
            .iter()
            .take(5)
            .map(|line| format!("\n  - `{line}`"))
            .collect::<String>()
    );
    out += &format!("- sidecar stop after SIGTERM: {exit:?}\n\n");
    out += "| minute | requests | req/s | VmRSS mean (MB) | VmRSS max (MB) | load average |\n|---|---|---|---|---|---|\n";
    out += &per_minute.join("\n");
    out += "\n\n## Expectations\n\n";
    for (what, ok) in &checks {
        out += &format!("- {} {what}\n", if *ok { "PASS" } else { "FAIL" });
    }
    out += &format!(
        "\n## /metrics at t = {read_s:.1} s (selected lines)\n\n```text\n{}\n```\n",
        metric_lines.join("\n")
    );
    println!("\n{out}");
    if let Some(path) = &args.results {
        std::fs::write(path, &out)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("written to {}", path.display());
    }
    if passed {
        0
    } else {
        eprintln!("soak: an expectation failed");
        1
    }
}
