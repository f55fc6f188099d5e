//! Faults at JTL over real sockets (SPEC §6, §9, §11): the whole sidecar in front of the
//! echo backend, with the emulator's token endpoint or key endpoint failing in each way
//! JTL (or a proxy in front of it) can fail. One driver, [`fault`], shows for every case:
//!
//! 1. the behaviour of SPEC §6: the failed request is retried with backoff (the token
//!    endpoint: 1 s doubling, jittered into the upper half; the key set: never more often
//!    than `jwks_min_refetch_interval_s`), no sooner than a `Retry-After`, and no request
//!    is made beyond those retries;
//! 2. requests through the ingress are still served (200 from the backend) with the
//!    current material: the same access token is forwarded, the last good key set verifies;
//! 3. one warning per failed request, naming the reason, and no secret or token anywhere in
//!    the log (captured as the product writes it: JSON, flattened events);
//! 4. `/metrics` on the admin listener counts each failed fetch
//!    (`jtl_sidecar_{token,jwks}_fetches_total{result="failure"}`), and the recovery as a
//!    success.
//!
//! And when no key can be had at all (the key endpoint failing from the start), the `503`
//! of the ingress and of connect-tenant says in `Retry-After` the real wait until the
//! next permitted key-set fetch.
//!
//! Time is the manual clock: the token (3600 s) is refreshed after 1800 s; the key
//! set every 60 s. The log is captured per test: `#[tokio::test]` runs everything spawned
//! on the sidecar's runtime (the refreshers, the admin listener) on the test's thread,
//! where the capturing subscriber is the default.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::harness::{TENANT, advance_waking_nothing, eventually_async};
use common::logs::Logs;
use common::proxy::{Proxy, get};
use jtl_auth_sidecar::emulator::Failure;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The legacy flow: JTL's token endpoint and its authenticated JWKS.
    SessionToken,
    /// SPEC §11: Zitadel's token endpoint and its public key set.
    AppToken,
}

impl Flow {
    /// A sidecar in this flow with `toml`.
    async fn start(self, toml: &str) -> Proxy {
        let flow = match self {
            Flow::SessionToken => jtl_auth_sidecar::config::Flow::SessionToken,
            Flow::AppToken => jtl_auth_sidecar::config::Flow::AppToken,
        };
        Proxy::builder().flow(flow).toml(toml).start().await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Token,
    Keys,
}

/// `jtl.timeout_ms` in these tests.
const TIMEOUT_MS: u64 = 300;
/// `jwks_min_refetch_interval_s`.
const MIN_REFETCH_MS: u64 = 5_000;
/// The client credentials of the emulator (EmulatorOptions::default()).
const CLIENT_ID: &str = "emulated-client";
const CLIENT_SECRET: &str = "emulated-secret";

impl Logs {
    /// The warnings whose message starts with `prefix`.
    fn warnings(&self, prefix: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|line| {
                line["level"] == "WARN"
                    && line["message"]
                        .as_str()
                        .is_some_and(|message| message.starts_with(prefix))
            })
            .collect()
    }
}

/// One sidecar in one flow, with the failure switch of one endpoint at hand.
struct Fixture {
    proxy: Proxy,
    flow: Flow,
    endpoint: Endpoint,
    logs: Logs,
    /// Every session / app token sent, to look for in the log.
    sent: Mutex<Vec<String>>,
    users: AtomicU64,
    _capture: tracing::subscriber::DefaultGuard,
}

impl Fixture {
    async fn start(flow: Flow, endpoint: Endpoint) -> Fixture {
        let (logs, capture) = Logs::capture(tracing::Level::INFO);
        // The token lives 3600 s and is refreshed 1800 s before its expiry; the key set is
        // refreshed every 60 s in the key cases and not at all in the token cases.
        let jwks_refresh_s = match endpoint {
            Endpoint::Token => 86_400,
            Endpoint::Keys => 60,
        };
        let toml = format!(
            "[jtl]\ntimeout_ms = {TIMEOUT_MS}\nrefresh_before_expiry_s = 1800\n[session]\njwks_refresh_interval_s = {jwks_refresh_s}\njwks_min_refetch_interval_s = {}\n",
            MIN_REFETCH_MS / 1000
        );
        let proxy = flow.start(&toml).await;
        let fixture = Fixture {
            proxy,
            flow,
            endpoint,
            logs,
            sent: Mutex::new(Vec::new()),
            users: AtomicU64::new(1),
            _capture: capture,
        };
        eventually_async("the sidecar is ready", || async {
            get(&fixture.proxy.admin_url("/readyz"), &[]).await.status == 200
        })
        .await;
        fixture
    }

    /// Calls the emulator has seen at the endpoint under test.
    fn calls(&self) -> u64 {
        let emulator = &self.proxy.emulator;
        match (self.flow, self.endpoint) {
            (Flow::SessionToken, Endpoint::Token) => emulator.token_requests(),
            (Flow::SessionToken, Endpoint::Keys) => emulator.jwks_requests(),
            (Flow::AppToken, Endpoint::Token) => emulator.app_token_requests(),
            (Flow::AppToken, Endpoint::Keys) => emulator.app_keys_requests(),
        }
    }

    fn set_failure(&self, failure: Failure) {
        let emulator = &self.proxy.emulator;
        match (self.flow, self.endpoint) {
            (Flow::SessionToken, Endpoint::Token) => emulator.set_token_failure(failure),
            (Flow::SessionToken, Endpoint::Keys) => emulator.set_jwks_failure(failure),
            (Flow::AppToken, Endpoint::Token) => emulator.set_app_token_failure(failure),
            (Flow::AppToken, Endpoint::Keys) => emulator.set_app_keys_failure(failure),
        }
    }

    /// How far the clock moves until the endpoint is called again by the refresher.
    fn until_due(&self) -> Duration {
        match self.endpoint {
            Endpoint::Token => Duration::from_secs(1800),
            Endpoint::Keys => Duration::from_secs(60),
        }
    }

    /// The start of the warning the product logs for one failed request.
    fn warning_prefix(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Token => "access token request failed: ",
            Endpoint::Keys => "JTL key set fetch failed: ",
        }
    }

    /// Fetches of the endpoint under test by `result`, as `/metrics` tells.
    async fn fetches(&self, result: &str) -> u64 {
        let family = match self.endpoint {
            Endpoint::Token => "jtl_sidecar_token_fetches_total",
            Endpoint::Keys => "jtl_sidecar_jwks_fetches_total",
        };
        let series = format!("{family}{{result=\"{result}\"}}");
        let answer = get(&self.proxy.admin_url("/metrics"), &[]).await;
        assert_eq!(answer.status, 200);
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(series.as_str())?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
    }

    /// A token for a new user (so it is verified, not a cache hit).
    fn user_token(&self) -> String {
        let n = self.users.fetch_add(1, Ordering::SeqCst);
        let emulator = &self.proxy.emulator;
        let token = match self.flow {
            Flow::SessionToken => {
                let user = format!("00000000-0000-4000-8000-{n:012}");
                emulator.mint_session_token(TENANT, &user, "acme", Duration::from_secs(3600))
            }
            Flow::AppToken => emulator.mint_app_token_for(
                TENANT,
                &format!("3129091860{n:08}"),
                Duration::from_secs(3600),
            ),
        }
        .expect("the emulator signs");
        self.sent.lock().unwrap().push(token.clone());
        token
    }

    /// A request through the ingress: asserts that the backend answered it, and returns
    /// the access token it was given (`Authorization`).
    async fn served(&self, when: &str) -> String {
        let hits = self.proxy.backend_hits();
        let token = self.user_token();
        let answer = get(
            &self.proxy.url("/orders"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(
            answer.status,
            200,
            "{when}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(self.proxy.backend_hits(), hits + 1, "{when}");
        let forwarded = answer.echoed("authorization");
        assert_eq!(forwarded.len(), 1, "{when}: {forwarded:?}");
        forwarded[0].clone()
    }

    /// Waits until the endpoint has been called `calls` times and `/metrics` counts
    /// `failures` failed fetches.
    async fn failed(&self, calls: u64, failures: u64, what: &str) {
        eventually_async(what, || async {
            self.calls() == calls && self.fetches("failure").await == failures
        })
        .await;
    }
}

/// When the sidecar may call the endpoint again after each failure, in ms after it:
/// (earliest, latest). A `Retry-After` is a floor over the backoff.
fn retry_windows(endpoint: Endpoint, retry_after_s: Option<u64>) -> Vec<(u64, u64)> {
    match (endpoint, retry_after_s) {
        (_, Some(seconds)) => vec![(seconds * 1000, seconds * 1000)],
        // 1 s doubling, jittered into the upper half.
        (Endpoint::Token, None) => vec![(500, 1_000), (1_000, 2_000)],
        // Backoff from jwks_min_refetch_interval_s, never below it.
        (Endpoint::Keys, None) => vec![
            (MIN_REFETCH_MS, MIN_REFETCH_MS),
            (MIN_REFETCH_MS, 2 * MIN_REFETCH_MS),
        ],
    }
}

/// The case driver: `failure` at `endpoint` in `flow`; each failed request must be logged
/// with a warning containing `reason`.
async fn fault(flow: Flow, endpoint: Endpoint, failure: Failure, reason: &str) {
    let f = Fixture::start(flow, endpoint).await;
    let clock = &f.proxy.clock;
    let before = f.served("before the fault").await;
    assert_eq!(f.fetches("success").await, 1);
    assert_eq!(f.fetches("failure").await, 0);
    let mut calls = f.calls();
    assert_eq!(calls, 1);
    let retry_after_s = match failure {
        Failure::StatusRetryAfter(_, seconds) => Some(seconds),
        Failure::RateLimited { retry_after_s } => Some(retry_after_s),
        _ => None,
    };

    f.set_failure(failure.clone());
    clock.advance(f.until_due());
    calls += 1;
    let mut failures = 1;
    f.failed(calls, failures, "the refresh fails").await;
    // The current material stays in use: the same access token is forwarded, and the key
    // set loaded before still verifies.
    assert_eq!(f.served("after the first failure").await, before);

    for (earliest, latest) in retry_windows(endpoint, retry_after_s) {
        // The retry waits on the clock: it sees the move and sleeps on, or the test fails.
        advance_waking_nothing(
            clock,
            Duration::from_millis(earliest - 1),
            "no retry before the earliest",
        )
        .await;
        assert_eq!(
            f.calls(),
            calls,
            "{failure:?}: called again within {earliest} ms of a failure"
        );
        assert_eq!(f.served("while retries wait").await, before);
        clock.advance(Duration::from_millis(latest - earliest + 1));
        calls += 1;
        failures += 1;
        f.failed(calls, failures, "the retry is made, and fails")
            .await;
    }

    // JTL answers again: the next retry succeeds.
    f.set_failure(Failure::None);
    eventually_async("the endpoint recovers", || async {
        clock.advance(Duration::from_secs(1));
        f.fetches("success").await == 2
    })
    .await;
    calls += 1;
    assert_eq!(f.calls(), calls, "no request beyond the retries");
    assert_eq!(f.fetches("failure").await, failures);
    let after = f.served("after the recovery").await;
    match endpoint {
        Endpoint::Token => assert_ne!(after, before, "the new token is in use"),
        Endpoint::Keys => assert_eq!(after, before),
    }

    // One warning per failed request, with the reason.
    let warnings = f.logs.warnings(f.warning_prefix());
    assert_eq!(
        warnings.len() as u64,
        failures,
        "{failure:?}: {}",
        f.logs.text()
    );
    for warning in &warnings {
        let message = warning["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{failure:?}: {message:?} does not say {reason:?}"
        );
        let retry_in_s = warning["retry_in_s"].as_u64();
        assert!(retry_in_s.is_some(), "{warning}");
        if let Some(seconds) = retry_after_s {
            assert!(retry_in_s >= Some(seconds), "{warning}");
        }
        if endpoint == Endpoint::Keys {
            // And says the last good set is still in use.
            assert_eq!(warning["usable"], true, "{warning}");
        }
    }
    // No secret and no token anywhere in the log.
    let log = f.logs.text();
    let basic = jtl_auth_sidecar::jtl::client_auth::basic_credentials(CLIENT_ID, CLIENT_SECRET);
    let mut secrets = vec![CLIENT_SECRET.to_owned(), basic];
    for bearer in [&before, &after] {
        secrets.push(bearer.trim_start_matches("Bearer ").to_owned());
    }
    secrets.extend(f.sent.lock().unwrap().iter().cloned());
    for secret in secrets {
        assert!(!log.contains(&secret), "{secret:?} is in the log:\n{log}");
    }
}

/// The reason for [`Failure::Reset`]: the emulator's SO_LINGER 0 close is a real RST.
const RESET: &str = "the connection was closed or reset before an answer arrived (by JTL or a proxy on the way): Connection reset by peer";

macro_rules! cases {
    ($($name:ident: $flow:ident, $endpoint:ident, $failure:expr, $reason:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                fault(Flow::$flow, Endpoint::$endpoint, $failure, $reason).await;
            }
        )*
    };
}

cases! {
    // The token endpoint, JTL's legacy one.
    token_429_with_retry_after: SessionToken, Token, Failure::StatusRetryAfter(429, 30), "answered HTTP 429";
    token_503: SessionToken, Token, Failure::Status(503), "answered HTTP 503";
    token_slow: SessionToken, Token, Failure::Delay(Duration::from_secs(2)), "no response within 300 ms (jtl.timeout_ms)";
    token_garbage_json: SessionToken, Token, Failure::Garbage, "answer is unusable: not JSON";
    token_empty_200: SessionToken, Token, Failure::Empty, "HTTP 200 with an empty body";
    token_without_access_token: SessionToken, Token, Failure::MissingField, "answer is unusable: no access_token";
    token_oversize: SessionToken, Token, Failure::Oversize, "larger than 65536 bytes";
    token_connection_reset: SessionToken, Token, Failure::Reset, RESET;

    // The key endpoint: JTL's authenticated JWKS.
    keys_429_with_retry_after: SessionToken, Keys, Failure::StatusRetryAfter(429, 30), "answered HTTP 429 and asked for 30 s";
    keys_503: SessionToken, Keys, Failure::Status(503), "answered HTTP 503";
    keys_slow: SessionToken, Keys, Failure::Delay(Duration::from_secs(2)), "no response within 300 ms (jtl.timeout_ms)";
    keys_garbage_json: SessionToken, Keys, Failure::Garbage, "not a strict JSON object";
    keys_empty_200: SessionToken, Keys, Failure::Empty, "HTTP 200 with an empty body";
    keys_without_keys: SessionToken, Keys, Failure::MissingField, "has no \"keys\" array";
    keys_oversize: SessionToken, Keys, Failure::Oversize, "larger than 65536 bytes";
    keys_connection_reset: SessionToken, Keys, Failure::Reset, RESET;

    // The app-token flow (SPEC §11): Zitadel's token endpoint and public key set.
    app_token_connection_reset: AppToken, Token, Failure::Reset, RESET;
    app_token_garbage_json: AppToken, Token, Failure::Garbage, "answer is unusable: not JSON";
    app_token_without_access_token: AppToken, Token, Failure::MissingField, "answer is unusable: no access_token";
    app_token_429_with_retry_after: AppToken, Token, Failure::RateLimited { retry_after_s: 30 }, "answered HTTP 429 (rate_limited)";
    app_keys_connection_reset: AppToken, Keys, Failure::Reset, RESET;
    app_keys_garbage_json: AppToken, Keys, Failure::Garbage, "not a strict JSON object";
    app_keys_without_keys: AppToken, Keys, Failure::MissingField, "has no \"keys\" array";
    app_keys_503: AppToken, Keys, Failure::Status(503), "answered HTTP 503";
}

/// A sidecar whose key endpoint fails from the start, with `jwks_min_refetch_interval_s`
/// = `min_refetch_s`: returned once its first key-set fetch has failed, so no key can be
/// had until the next permitted fetch.
async fn without_keys(flow: Flow, min_refetch_s: u64, failure: Failure) -> Proxy {
    let toml = format!("[session]\njwks_min_refetch_interval_s = {min_refetch_s}\n");
    let proxy = flow.start(&toml).await;
    // Before the refresher's first fetch: the sidecar has not run yet on this thread.
    match flow {
        Flow::SessionToken => proxy.emulator.set_jwks_failure(failure),
        Flow::AppToken => proxy.emulator.set_app_keys_failure(failure),
    }
    let series = "jtl_sidecar_jwks_fetches_total{result=\"failure\"} 1";
    eventually_async("the first key-set fetch fails", || async {
        let answer = get(&proxy.admin_url("/metrics"), &[]).await;
        String::from_utf8_lossy(&answer.body)
            .lines()
            .any(|line| line == series)
    })
    .await;
    proxy
}

/// A request through the ingress with a new token; it must be the keys' 503. Returns its
/// `Retry-After`.
async fn keys_503_retry_after(proxy: &Proxy, flow: Flow) -> String {
    let token = match flow {
        Flow::SessionToken => proxy.token(),
        Flow::AppToken => proxy
            .emulator
            .mint_app_token_for(TENANT, "312909186000000001", Duration::from_secs(3600))
            .expect("the emulator signs"),
    };
    let answer = get(
        &proxy.url("/orders"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(
        answer.status,
        503,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    assert_eq!(proxy.backend_hits(), 0);
    answer.headers["retry-after"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_503_for_keys_that_cannot_be_had_says_the_wait_until_the_next_permitted_fetch() {
    for flow in [Flow::SessionToken, Flow::AppToken] {
        // The first failure waits exactly jwks_min_refetch_interval_s (the backoff starts
        // there, and is never below it).
        let proxy = without_keys(flow, 1, Failure::Status(503)).await;
        assert_eq!(keys_503_retry_after(&proxy, flow).await, "1", "{flow:?}");
        proxy.clock.advance(Duration::from_millis(600));
        assert_eq!(keys_503_retry_after(&proxy, flow).await, "1", "{flow:?}");

        let proxy = without_keys(flow, 30, Failure::Status(503)).await;
        assert_eq!(keys_503_retry_after(&proxy, flow).await, "30", "{flow:?}");
        // The real wait, rounded up: 19.5 s after 10.5 s.
        proxy.clock.advance(Duration::from_millis(10_500));
        assert_eq!(keys_503_retry_after(&proxy, flow).await, "20", "{flow:?}");
    }

    // A Retry-After of the key endpoint puts the next fetch further away.
    let proxy = without_keys(Flow::SessionToken, 1, Failure::StatusRetryAfter(429, 45)).await;
    assert_eq!(keys_503_retry_after(&proxy, Flow::SessionToken).await, "45");

    // Connect-tenant answers the same 503.
    let proxy = without_keys(Flow::SessionToken, 30, Failure::Status(503)).await;
    let body = serde_json::json!({ "sessionToken": proxy.token() }).to_string();
    let request = http::Request::post(proxy.url("/api/connect-tenant"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let answer = common::proxy::send(request).await;
    assert_eq!(
        answer.status,
        503,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    assert_eq!(answer.headers["retry-after"], "30");
}
