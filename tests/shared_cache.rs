//! Several replicas share one access token through Redis (SPEC §12), against the real
//! Redis at `TEST_REDIS_URL` (`.ci/run` sets it) and private `redis-server`s the tests
//! start on free ports, with replicas (access-token managers, or whole sidecars) against
//! one JTL emulator on one manual clock.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::harness::{START_MS, advance_waking_nothing, eventually, eventually_async};
use common::proxy::get;
use common::redis::{PrivateRedis, test_redis_url};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::config::{Config, load_str};
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions};
use jtl_auth_sidecar::jtl::{AccessTokens, Jtl, TokenError};
use jtl_auth_sidecar::server::{Addresses, Server};
use jtl_auth_sidecar::shared_cache::{SharedTokenStore, lock_key};
use jtl_auth_sidecar::tls::TlsRoots;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A key prefix no other test (or run) uses.
fn unique_prefix() -> String {
    format!("jtl-sidecar-test-{}", uuid::Uuid::new_v4().simple())
}

/// JTL (the emulator) and the clock every replica of one app shares.
struct App {
    emulator: Emulator,
    clock: Clock,
    redis_url: String,
    prefix: String,
}

impl App {
    async fn start(redis_url: &str, options: EmulatorOptions) -> App {
        let clock = Clock::manual(START_MS);
        let emulator = Emulator::start(options, clock.clone())
            .await
            .expect("emulator starts");
        App {
            emulator,
            clock,
            redis_url: redis_url.to_owned(),
            prefix: unique_prefix(),
        }
    }

    fn toml(&self, secret: &str, extra_shared: &str) -> String {
        let options = EmulatorOptions::default();
        format!(
            "[jtl]\nclient_id = {:?}\nclient_secret = {secret:?}\ntoken_url = {:?}\napi_base_url = {:?}\ntimeout_ms = 2000\n\
             [session]\nflow = \"session-token\"\n\
             [shared_cache]\nredis_url = {:?}\nkey_prefix = {:?}\n{extra_shared}\n",
            options.client_id,
            self.emulator.token_url(),
            self.emulator.api_base_url(),
            self.redis_url,
            self.prefix,
        )
    }

    fn config_with(&self, secret: &str, extra_shared: &str) -> Config {
        let toml = self.toml(secret, extra_shared);
        load_str(&toml, Vec::new())
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"))
            .config
    }

    fn config(&self) -> Config {
        self.config_with(&EmulatorOptions::default().client_secret, "")
    }

    /// One replica's access-token manager, sharing through Redis.
    fn replica_of(&self, config: &Config) -> AccessTokens {
        let roots = TlsRoots::new(config.jtl.ca_file.as_deref()).expect("roots");
        let shared =
            SharedTokenStore::from_config(config, roots, self.clock.clone(), Handle::current())
                .expect("shared store")
                .expect("redis_url is set");
        Jtl::from_config_with_shared_store(
            config,
            self.clock.clone(),
            Some(shared),
            Handle::current(),
        )
        .expect("JTL client")
        .tokens
    }

    fn replica(&self) -> AccessTokens {
        self.replica_of(&self.config())
    }

    fn replicas(&self, n: usize) -> Vec<AccessTokens> {
        (0..n).map(|_| self.replica()).collect()
    }
}

/// What replicas obtain when they all ask at once.
async fn get_all(replicas: &[AccessTokens]) -> Vec<String> {
    let calls: Vec<_> = replicas
        .iter()
        .map(|tokens| {
            let tokens = tokens.clone();
            tokio::spawn(async move { tokens.get().await.map(|t| t.value().to_owned()) })
        })
        .collect();
    let mut values = Vec::new();
    for call in calls {
        values.push(call.await.expect("no panic").expect("a token"));
    }
    values
}

fn sum(replicas: &[AccessTokens], pick: fn(&AccessTokens) -> u64) -> u64 {
    replicas.iter().map(pick).sum()
}

fn lock_wins(tokens: &AccessTokens) -> u64 {
    tokens
        .shared_counts()
        .map_or(0, |c| c.lock_wins.load(Ordering::SeqCst))
}

fn hits(tokens: &AccessTokens) -> u64 {
    tokens
        .shared_counts()
        .map_or(0, |c| c.hits.load(Ordering::SeqCst))
}

fn errors(tokens: &AccessTokens) -> u64 {
    tokens
        .shared_counts()
        .map_or(0, |c| c.errors.load(Ordering::SeqCst))
}

async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection to Redis")
}

fn all_equal(values: &[String]) -> bool {
    values.iter().all(|v| *v == values[0])
}

fn lasting(expires_in: u64) -> EmulatorOptions {
    EmulatorOptions {
        expires_in: Some(expires_in),
        ..EmulatorOptions::default()
    }
}

// ---- one token for all ------------------------------------------------------------------------

#[tokio::test]
async fn three_replicas_started_together_make_one_token_request() {
    let Some(url) = test_redis_url("three_replicas_started_together_make_one_token_request").await
    else {
        return;
    };
    let app = App::start(&url, EmulatorOptions::default()).await;
    let replicas = app.replicas(3);
    let values = get_all(&replicas).await;
    assert!(all_equal(&values), "one token for all");
    assert_eq!(app.emulator.token_requests(), 1);
    assert_eq!(sum(&replicas, lock_wins), 1);
    assert_eq!(
        sum(&replicas, hits),
        2,
        "the two others took the shared one"
    );
    assert_eq!(sum(&replicas, errors), 0);
}

#[tokio::test]
async fn a_replica_started_later_makes_no_token_request() {
    let Some(url) = test_redis_url("a_replica_started_later_makes_no_token_request").await else {
        return;
    };
    let app = App::start(&url, EmulatorOptions::default()).await;
    let first = app.replica().get().await.unwrap();
    let later = app.replica();
    let token = later.get().await.unwrap();
    assert_eq!(token.value(), first.value());
    assert_eq!(token.expires_at_ms(), first.expires_at_ms());
    assert_eq!(
        token.refresh_at_ms(),
        first.refresh_at_ms(),
        "same schedule"
    );
    assert_eq!(app.emulator.token_requests(), 1);
    assert_eq!(hits(&later), 1);
    assert_eq!(lock_wins(&later), 0);
}

#[tokio::test]
async fn after_jtl_refuses_the_token_all_replicas_make_one_new_request_between_them() {
    let Some(url) =
        test_redis_url("after_jtl_refuses_the_token_all_replicas_make_one_new_request").await
    else {
        return;
    };
    let app = App::start(&url, EmulatorOptions::default()).await;
    let replicas = app.replicas(3);
    let first = get_all(&replicas).await;
    assert_eq!(app.emulator.token_requests(), 1);

    // JTL forgets the token; every replica's next API call gets a 401 for it.
    app.emulator.revoke_access_tokens();
    let calls: Vec<_> = replicas
        .iter()
        .map(|tokens| {
            let tokens = tokens.clone();
            tokio::spawn(async move {
                let refused = tokens.current().expect("the shared token");
                tokens.invalidate(&refused);
                tokens.get().await.map(|t| t.value().to_owned())
            })
        })
        .collect();
    let mut second = Vec::new();
    for call in calls {
        second.push(call.await.unwrap().expect("a new token"));
    }
    assert!(all_equal(&second), "{second:?}");
    assert_ne!(second[0], first[0]);
    assert_eq!(app.emulator.token_requests(), 2, "one new request for all");
}

#[tokio::test]
async fn a_replica_holding_an_older_token_takes_the_newer_shared_one() {
    let Some(url) =
        test_redis_url("a_replica_holding_an_older_token_takes_the_newer_shared_one").await
    else {
        return;
    };
    let app = App::start(&url, EmulatorOptions::default()).await;
    let (a, b) = (app.replica(), app.replica());
    let old = a.get().await.unwrap();
    assert_eq!(b.get().await.unwrap().value(), old.value());
    app.emulator.revoke_access_tokens();

    // A meets the 401 first and gets (and shares) a new token.
    a.invalidate(&old);
    let new = a.get().await.unwrap();
    assert_ne!(new.value(), old.value());
    assert_eq!(app.emulator.token_requests(), 2);

    // B meets its 401 later, with the old token: it takes A's, and JTL is not asked.
    let b_old = b.current().unwrap();
    b.invalidate(&b_old);
    assert_eq!(b.get().await.unwrap().value(), new.value());
    assert_eq!(app.emulator.token_requests(), 2);
    // A late 401 for the old token changes nothing either.
    a.invalidate(&old);
    assert_eq!(a.get().await.unwrap().value(), new.value());
    assert_eq!(app.emulator.token_requests(), 2);
}

#[tokio::test]
async fn refresh_ahead_happens_once_for_all() {
    let Some(url) = test_redis_url("refresh_ahead_happens_once_for_all").await else {
        return;
    };
    let app = App::start(&url, lasting(600)).await;
    let replicas = app.replicas(3);
    let (stop, _) = tokio::sync::watch::channel(false);
    for tokens in &replicas {
        let mut stopped = stop.subscribe();
        tokio::spawn(tokens.clone().run_refresher(async move {
            let _ = stopped.changed().await;
        }));
    }
    eventually("every replica has a token", || {
        replicas.iter().all(|t| t.current().is_some())
    })
    .await;
    let first = replicas[0].current().unwrap();
    assert!(
        replicas
            .iter()
            .all(|t| t.current().unwrap().value() == first.value())
    );
    assert_eq!(app.emulator.token_requests(), 1);

    // Nothing before the refresh time (60 s ahead of the expiry): the three refreshers
    // see 539 s and sleep on.
    eventually("every refresher sleeps", || app.clock.asleep() == 3).await;
    advance_waking_nothing(&app.clock, Duration::from_secs(539), "nothing before 540 s").await;
    assert_eq!(app.emulator.token_requests(), 1);

    app.clock.advance(Duration::from_secs(2));
    eventually("every replica has the new token", || {
        replicas
            .iter()
            .all(|t| t.current().is_some_and(|c| c.value() != first.value()))
    })
    .await;
    let new = replicas[0].current().unwrap();
    assert!(
        replicas
            .iter()
            .all(|t| t.current().unwrap().value() == new.value())
    );
    // Every refresher asleep again until the next refresh time: no refresh is under way.
    eventually("every refresher sleeps again", || app.clock.asleep() == 3).await;
    assert_eq!(app.emulator.token_requests(), 2, "one refresh for all");
    assert_eq!(sum(&replicas, lock_wins), 2);
    let _ = stop.send(true);
}

#[tokio::test]
async fn a_lock_holder_that_dies_is_taken_over_after_the_lock_expires() {
    let Some(url) =
        test_redis_url("a_lock_holder_that_dies_is_taken_over_after_the_lock_expires").await
    else {
        return;
    };
    let app = App::start(&url, EmulatorOptions::default()).await;
    let replicas = app.replicas(3);
    // A replica took the lock and died: nobody releases it; it expires after 700 ms.
    let key = replicas[0].shared_store().unwrap().key().to_owned();
    let mut raw = raw_connection(&url).await;
    let _: () = redis::cmd("SET")
        .arg(lock_key(&key))
        .arg("dead-replica")
        .arg("PX")
        .arg(700)
        .query_async(&mut raw)
        .await
        .unwrap();
    let started = Instant::now();
    let values = get_all(&replicas).await;
    let waited = started.elapsed();
    assert!(all_equal(&values));
    assert!(
        waited >= Duration::from_millis(600),
        "they waited for the lock: {waited:?}"
    );
    assert!(waited < Duration::from_millis(2000), "{waited:?}");
    assert_eq!(app.emulator.token_requests(), 1, "one of them took over");
    assert_eq!(sum(&replicas, lock_wins), 1);
}

// ---- sealed at rest ------------------------------------------------------------------------

#[tokio::test]
async fn the_value_in_redis_is_not_the_token_in_plain_text() {
    let Some(url) = test_redis_url("the_value_in_redis_is_not_the_token_in_plain_text").await
    else {
        return;
    };
    let app = App::start(&url, EmulatorOptions::default()).await;
    let tokens = app.replica();
    let token = tokens.get().await.unwrap();
    let key = tokens.shared_store().unwrap().key().to_owned();
    assert!(
        key.starts_with(&format!("{}:access-token:", app.prefix)),
        "{key}"
    );

    let mut raw = raw_connection(&url).await;
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(value[0], 1, "version byte");
    let plain = token.value().as_bytes();
    assert!(!value.windows(plain.len()).any(|w| w == plain));
    // Nor any sizeable piece of it (the JWT's header or payload).
    for piece in token.value().split('.') {
        assert!(!value.windows(piece.len()).any(|w| w == piece.as_bytes()));
    }
    // It expires with the token (the emulator's live an hour).
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl_ms > 3_500_000 && ttl_ms <= 3_600_000, "{ttl_ms}");
    // The lock is gone once the entry is written.
    let lock: Option<String> = redis::cmd("GET")
        .arg(lock_key(&key))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(lock, None);
}

#[tokio::test]
async fn a_reader_with_another_client_secret_sees_no_entry() {
    let Some(url) = test_redis_url("a_reader_with_another_client_secret_sees_no_entry").await
    else {
        return;
    };
    let app = App::start(&url, EmulatorOptions::default()).await;
    app.replica().get().await.unwrap();
    // Same app (token URL, client id, scope: the same key), another secret.
    let other = app.replica_of(&app.config_with("another-secret", ""));
    let error = other.get().await.unwrap_err();
    assert_eq!(
        error.cause,
        TokenError::InvalidClient,
        "it asked JTL itself"
    );
    assert_eq!(hits(&other), 0);
    assert_eq!(app.emulator.token_requests(), 2);
}

#[tokio::test]
async fn two_apps_sharing_one_redis_never_see_each_others_token() {
    let Some(url) = test_redis_url("two_apps_sharing_one_redis_never_see_each_others_token").await
    else {
        return;
    };
    let shop = App::start(&url, EmulatorOptions::default()).await;
    let mut crm = App::start(&url, EmulatorOptions::default()).await;
    crm.prefix = shop.prefix.clone(); // One Redis, one prefix: only the digest differs.
    let shop_token = shop.replica().get().await.unwrap();
    let crm_replica = crm.replica();
    let crm_token = crm_replica.get().await.unwrap();
    assert_ne!(shop_token.value(), crm_token.value());
    assert_eq!(shop.emulator.token_requests(), 1);
    assert_eq!(crm.emulator.token_requests(), 1);
    assert_eq!(hits(&crm_replica), 0);
    // Another scope is another app too.
    let scoped = shop.replica_of(&{
        let mut config = shop.config();
        config.jtl.scope = Some("openid".into());
        config
    });
    assert_ne!(
        scoped.shared_store().unwrap().key(),
        crm_replica.shared_store().unwrap().key()
    );
}

// ---- Redis is never a dependency ------------------------------------------------------------

/// A whole sidecar (ingress unused, egress on, no tenant store) of one app.
struct Sidecar {
    addresses: Addresses,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Sidecar {
    async fn start(app: &App) -> Sidecar {
        let env: Vec<(String, String)> = [
            ("JTL_SIDECAR_INGRESS__LISTEN", "127.0.0.1:0"),
            ("JTL_SIDECAR_ADMIN__LISTEN", "127.0.0.1:0"),
            ("JTL_SIDECAR_EGRESS__LISTEN", "127.0.0.1:0"),
            ("JTL_SIDECAR_INGRESS__UPSTREAM", "http://127.0.0.1:1"),
            ("JTL_SIDECAR_TENANTS__CONNECT_PATH", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let toml = app.toml(&EmulatorOptions::default().client_secret, "");
        let config = load_str(&toml, env).expect("sidecar config").config;
        let server = Server::bind(config, app.clock.clone())
            .await
            .expect("sidecar binds");
        let addresses = server.addresses();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Sidecar {
            addresses,
            stop: Some(stop),
        }
    }

    async fn ready(&self) -> bool {
        get(&format!("http://{}/readyz", self.addresses.admin), &[])
            .await
            .status
            == 200
    }

    /// The bearer token an egress call carried to JTL's API (the emulator echoes it).
    async fn egress_token(&self) -> String {
        let egress = self.addresses.egress.expect("egress on");
        let answer = get(&format!("http://{egress}/v1/ping"), &[]).await;
        assert_eq!(answer.status, 200, "egress serves");
        answer
            .echoed("authorization")
            .first()
            .cloned()
            .expect("the API saw a bearer token")
    }

    async fn metrics(&self) -> String {
        let answer = get(&format!("http://{}/metrics", self.addresses.admin), &[]).await;
        String::from_utf8_lossy(&answer.body).into_owned()
    }
}

async fn all_ready(sidecars: &[Sidecar]) -> bool {
    for sidecar in sidecars {
        if !sidecar.ready().await {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn redis_killed_mid_run_replicas_keep_serving_and_share_again_once_it_is_back() {
    let test = "redis_killed_mid_run_replicas_keep_serving_and_share_again_once_it_is_back";
    if test_redis_url(test).await.is_none() {
        return;
    }
    let Some(mut redis) = PrivateRedis::start(test, &[]).await else {
        return;
    };
    let app = App::start(&redis.url("", 0), lasting(600)).await;
    let sidecars = vec![
        Sidecar::start(&app).await,
        Sidecar::start(&app).await,
        Sidecar::start(&app).await,
    ];
    eventually_async("all three are ready", || all_ready(&sidecars)).await;
    assert_eq!(app.emulator.token_requests(), 1);
    let shared = sidecars[0].egress_token().await;
    for sidecar in &sidecars {
        assert_eq!(sidecar.egress_token().await, shared);
    }

    // Redis dies; the refresh comes: each replica gets its own token, and serves.
    redis.kill();
    app.clock.advance(Duration::from_secs(541));
    eventually("each replica refreshed by itself", || {
        app.emulator.token_requests() == 4
    })
    .await;
    for sidecar in &sidecars {
        assert!(sidecar.ready().await, "readiness does not depend on Redis");
        assert_ne!(sidecar.egress_token().await, shared);
    }
    let metrics = sidecars[0].metrics().await;
    assert!(
        metrics.contains("jtl_sidecar_shared_token_total{event=\"error\"} 1"),
        "{metrics}"
    );

    // Redis is back (empty): the next refresh is one request for all again.
    redis.restart().await;
    app.clock.advance(Duration::from_secs(541));
    eventually("the refresh after Redis came back", || {
        app.emulator.token_requests() >= 5
    })
    .await;
    eventually_async("all ready", || all_ready(&sidecars)).await;
    // Each replica held a token of its own; once all three carry the same one, every
    // replica's refresh is over, and a request of its own would have come before.
    eventually_async("every replica carries the shared token", || async {
        let first = sidecars[0].egress_token().await;
        for sidecar in &sidecars[1..] {
            if sidecar.egress_token().await != first {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(app.emulator.token_requests(), 5, "shared again");
    let again = sidecars[0].egress_token().await;
    for sidecar in &sidecars {
        assert_eq!(sidecar.egress_token().await, again);
    }
    let mut lock_wins = 0;
    for sidecar in &sidecars {
        let metrics = sidecar.metrics().await;
        if metrics.contains("jtl_sidecar_shared_token_total{event=\"lock_won\"} 2") {
            lock_wins += 1;
        }
        assert!(metrics.contains("jtl_sidecar_shared_token_total{event=\"read\"}"));
    }
    assert!(lock_wins <= 1, "one replica asked for all, twice at most");
}

#[tokio::test]
async fn an_unreachable_redis_is_no_dependency() {
    if test_redis_url("an_unreachable_redis_is_no_dependency")
        .await
        .is_none()
    {
        return;
    }
    // Nothing listens on the port: each replica gets its own token, at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = App::start(
        &format!("redis://127.0.0.1:{port}"),
        EmulatorOptions::default(),
    )
    .await;
    let replicas = app.replicas(2);
    let started = Instant::now();
    let values = get_all(&replicas).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_ne!(values[0], values[1], "each its own");
    assert_eq!(app.emulator.token_requests(), 2);
    assert_eq!(sum(&replicas, errors), 2);
    assert!(replicas[0].shared_store().unwrap().is_down());
}

#[tokio::test]
async fn a_refused_login_falls_back_and_the_password_file_logs_in_to_its_database() {
    let test = "a_refused_login_falls_back_and_the_password_file_logs_in_to_its_database";
    if test_redis_url(test).await.is_none() {
        return;
    }
    let Some(redis) = PrivateRedis::start(test, &["--requirepass", "right-pass"]).await else {
        return;
    };
    // A wrong password: AUTH refused, so each replica is on its own.
    let wrong = App::start(&redis.url(":wrong-pass@", 0), EmulatorOptions::default()).await;
    let replicas = wrong.replicas(2);
    get_all(&replicas).await;
    assert_eq!(wrong.emulator.token_requests(), 2);
    assert!(sum(&replicas, errors) >= 2);

    // The password from a file (with the trailing newline `echo` writes), database 3.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "right-pass\n").unwrap();
    let app = App::start(&redis.url("", 3), EmulatorOptions::default()).await;
    let config = app.config_with(
        &EmulatorOptions::default().client_secret,
        &format!("redis_password_file = {:?}", file.display().to_string()),
    );
    let replicas = vec![app.replica_of(&config), app.replica_of(&config)];
    let values = get_all(&replicas).await;
    assert!(all_equal(&values));
    assert_eq!(app.emulator.token_requests(), 1);
    assert_eq!(sum(&replicas, errors), 0);
    let key = replicas[0].shared_store().unwrap().key().to_owned();
    let mut db3 = raw_connection(&redis.url(":right-pass@", 3)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut db3)
        .await
        .unwrap();
    assert_eq!(exists, 1, "the entry is in database 3");
    let mut db0 = raw_connection(&redis.url(":right-pass@", 0)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut db0)
        .await
        .unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn without_shared_cache_nothing_changes() {
    // No Redis at all: the counts stay absent, and each manager is on its own.
    let clock = Clock::manual(START_MS);
    let emulator = Emulator::start(EmulatorOptions::default(), clock.clone())
        .await
        .unwrap();
    let options = EmulatorOptions::default();
    let toml = format!(
        "[jtl]\nclient_id = {:?}\nclient_secret = {:?}\ntoken_url = {:?}\napi_base_url = {:?}\n[session]\nflow = \"session-token\"\n",
        options.client_id,
        options.client_secret,
        emulator.token_url(),
        emulator.api_base_url(),
    );
    let config = load_str(&toml, Vec::new()).unwrap().config;
    assert!(
        SharedTokenStore::from_config(
            &config,
            TlsRoots::new(None).unwrap(),
            clock.clone(),
            Handle::current()
        )
        .unwrap()
        .is_none()
    );
    let tokens = Jtl::from_config_with_shared_store(&config, clock, None, Handle::current())
        .unwrap()
        .tokens;
    assert!(tokens.get().await.is_ok());
    assert!(tokens.shared_counts().is_none());
}

#[tokio::test]
async fn rediss_trusts_the_roots_of_jtls_connections_ca_file_included() {
    let test = "rediss_trusts_the_roots_of_jtls_connections_ca_file_included";
    if test_redis_url(test).await.is_none() {
        return;
    }
    let Some(redis) = PrivateRedis::start_tls(test, &[]).await else {
        return;
    };
    let url = format!("rediss://localhost:{}/0", redis.port);
    let ca = redis.tls_cert.clone().expect("tls");

    // jtl.ca_file names the private CA: TLS succeeds and the token is shared.
    let app = App::start(&url, EmulatorOptions::default()).await;
    let mut config = app.config();
    config.jtl.ca_file = Some(ca);
    let replicas = vec![app.replica_of(&config), app.replica_of(&config)];
    let values = get_all(&replicas).await;
    assert!(all_equal(&values));
    assert_eq!(app.emulator.token_requests(), 1);
    assert_eq!(sum(&replicas, errors), 0);

    // Without it the certificate is not trusted: no sharing, but tokens all the same.
    let untrusting = App::start(&url, EmulatorOptions::default()).await;
    let replicas = untrusting.replicas(2);
    get_all(&replicas).await;
    assert_eq!(untrusting.emulator.token_requests(), 2);
    assert!(sum(&replicas, errors) >= 2);
}
