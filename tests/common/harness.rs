//! The JTL emulator plus the sidecar's JTL client on a manual clock, over real sockets.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::config::{Config, load_str};
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions};
use jtl_auth_sidecar::jtl::Jtl;
use jtl_auth_sidecar::verify::TokenVerifier;
use tokio::sync::watch;

/// Start of the manual clock in tests (2026-09-21, Unix ms).
pub const START_MS: i64 = 1_790_000_000_000;

pub const TENANT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
pub const USER: &str = "2f1b8d2c-5c1e-4a7e-9b3f-1d2e3f4a5b6c";

pub struct Harness {
    pub emulator: Emulator,
    pub clock: Clock,
    pub config: Config,
    pub jtl: Jtl,
    pub verifier: Arc<TokenVerifier>,
    stop: watch::Sender<bool>,
    /// Keeps `ca_file` / `client_secret_file` alive.
    pub dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Extra TOML for `[jtl]` and `[session]` beyond the emulator's URLs and credentials.
#[derive(Default)]
pub struct Extra {
    pub jtl: &'static str,
    pub session: &'static str,
    /// Write this to a file and use it as `client_secret_file` instead of an inline secret.
    pub secret_file: Option<String>,
    /// Trust the emulator's certificate through `jtl.ca_file` (when it serves HTTPS).
    pub trust_emulator_ca: bool,
}

impl Harness {
    pub async fn start(options: EmulatorOptions, extra: Extra) -> Harness {
        let clock = Clock::manual(START_MS);
        let emulator = Emulator::start(options.clone(), clock.clone())
            .await
            .expect("emulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let secret_line = match &extra.secret_file {
            Some(content) => {
                let path = dir.path().join("client-secret");
                std::fs::write(&path, content).expect("secret file");
                format!("client_secret_file = {:?}", path.display().to_string())
            }
            None => format!("client_secret = {:?}", options.client_secret),
        };
        let ca_line = match (extra.trust_emulator_ca, emulator.ca_pem()) {
            (true, Some(pem)) => {
                let path = dir.path().join("ca.pem");
                std::fs::write(&path, pem).expect("ca file");
                format!("ca_file = {:?}", path.display().to_string())
            }
            _ => String::new(),
        };
        // The harness is the legacy IdP's: session tokens, unless a test names its flow.
        let flow_line = if extra.session.contains("flow") {
            ""
        } else {
            "flow = \"session-token\"\n"
        };
        let toml = format!(
            "[jtl]\nclient_id = {:?}\n{secret_line}\n{ca_line}\ntoken_url = {:?}\napi_base_url = {:?}\n{}\n[session]\n{flow_line}{}\n",
            options.client_id,
            emulator.token_url(),
            emulator.api_base_url(),
            extra.jtl,
            extra.session,
        );
        let config = load_str(&toml, Vec::new())
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"))
            .config;
        let jtl = Jtl::from_config(&config, clock.clone()).expect("JTL client");
        let verifier = Arc::new(TokenVerifier::new(
            config.session.flow,
            &config.session.profiles,
            &jtl.key_sets,
            clock.clone(),
            config.session.verified_cache_entries,
        ));
        let (stop, _) = watch::channel(false);
        Harness {
            emulator,
            clock,
            config,
            jtl,
            verifier,
            stop,
            dir,
        }
    }

    pub async fn default() -> Harness {
        Harness::start(EmulatorOptions::default(), Extra::default()).await
    }

    /// Completes when the harness is dropped.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let mut stopped = self.stop.subscribe();
        async move {
            let _ = stopped.changed().await;
        }
    }

    pub fn spawn_token_refresher(&self) {
        tokio::spawn(
            self.jtl
                .tokens
                .clone()
                .run_refresher(self.shutdown_signal()),
        );
    }

    /// Starts the token refresher and waits for its first token.
    pub async fn refreshed_token(&self) -> std::sync::Arc<jtl_auth_sidecar::jtl::AccessToken> {
        self.spawn_token_refresher();
        eventually("the first token is fetched", || {
            self.jtl.tokens.current().is_some()
        })
        .await;
        self.jtl.tokens.current().expect("a token")
    }

    /// Waits until the current access token is another than `first`.
    pub async fn replaced(
        &self,
        first: &std::sync::Arc<jtl_auth_sidecar::jtl::AccessToken>,
        what: &str,
    ) {
        eventually(what, || {
            self.jtl
                .tokens
                .current()
                .is_some_and(|token| !std::sync::Arc::ptr_eq(&token, first))
        })
        .await;
    }

    pub fn spawn_key_refresher(&self) {
        tokio::spawn(
            self.jtl
                .keys()
                .clone()
                .run_refresher(self.shutdown_signal()),
        );
    }

    /// A fresh session token for user number `n` of the test tenant, valid for an hour,
    /// signed with the emulator's first key and without a header kid.
    pub fn token_for(&self, n: u32) -> String {
        let user = format!("00000000-0000-4000-8000-{n:012}");
        self.emulator
            .mint_session_token(TENANT, &user, "acme", Duration::from_secs(3600))
            .expect("emulator has a key")
    }
}

/// How long (real time) a test waits for something that should happen at once, 10 s
/// unless `TEST_PATIENCE_MS` says otherwise: the one setting for a slow CI machine. It
/// bounds every wait in [`eventually`] and [`eventually_async`]; nothing waits for it
/// to pass, so a larger value never slows a passing run.
pub fn patience() -> Duration {
    static PATIENCE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *PATIENCE.get_or_init(|| {
        let ms = std::env::var("TEST_PATIENCE_MS")
            .ok()
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .unwrap_or(10_000);
        Duration::from_millis(ms)
    })
}

/// `base` scaled as [`patience`] is (1× at the default 10 s), for a wait that is longer
/// or shorter by nature (a restart, a readiness poll).
pub fn scaled(base: Duration) -> Duration {
    base.mul_f64(patience().as_secs_f64() / 10.0)
}

/// Waits (real time, at most [`patience`]) until `condition` holds: background tasks
/// react to a clock move over real sockets, which takes a moment.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience();
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// As [`eventually`], for a condition that needs I/O (a request to the sidecar).
pub async fn eventually_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + patience();
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Moves the manual clock by `by` and asserts the move woke nothing: every task asleep on
/// the clock has looked at the new time and gone back to sleep (the clock's own barrier,
/// no real-time wait), so whatever would follow a wake-up cannot have started.
pub async fn advance_waking_nothing(clock: &Clock, by: Duration, what: &str) {
    settled(clock, what).await;
    let before = clock.wakeups();
    clock.advance(by);
    settled(clock, what).await;
    assert_eq!(clock.wakeups(), before, "{what}: the move woke a sleeper");
}

/// Waits (at most [`patience`]) until every sleeper on the manual clock has seen its
/// latest move.
pub async fn settled(clock: &Clock, what: &str) {
    tokio::time::timeout(patience(), clock.settled())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for the clock's sleepers ({what})"));
}
