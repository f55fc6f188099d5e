//! Exchanged tokens (`X-JTL-Act-As`) shared by several replicas through Redis (SPEC §14,
//! §12): whole sidecars against one JTL emulator on one manual clock, with the real Redis
//! at `TEST_REDIS_URL` or a private `redis-server` the test kills.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::harness::{START_MS, TENANT, eventually_async};
use common::proxy::{Answer, get};
use common::redis::{PrivateRedis, test_redis_url};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::config::load_str;
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions, ExchangeKind};
use jtl_auth_sidecar::server::Server;
use tokio::sync::oneshot;

/// One app: JTL (the emulator) and the clock its replicas share, and their Redis.
struct App {
    emulator: Emulator,
    clock: Clock,
    toml: String,
}

impl App {
    async fn start(redis_url: &str) -> App {
        let clock = Clock::manual(START_MS);
        let options = EmulatorOptions {
            expires_in: Some(24 * 3600),
            ..EmulatorOptions::default()
        };
        let emulator = Emulator::start(options.clone(), clock.clone())
            .await
            .expect("emulator starts");
        emulator.set_exchanged_token_lifetime(600);
        let prefix = format!("jtl-sidecar-test-{}", uuid::Uuid::new_v4().simple());
        let toml = format!(
            "[ingress]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:1\"\n\
             [egress]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [tenants]\nconnect_path = \"\"\n\
             [jtl]\nclient_id = {:?}\nclient_secret = {:?}\ntoken_url = {:?}\napi_base_url = {:?}\ntimeout_ms = 2000\n\
             [session]\nflow = \"session-token\"\n\
             [shared_cache]\nredis_url = {redis_url:?}\nkey_prefix = {prefix:?}\n",
            options.client_id,
            options.client_secret,
            emulator.token_url(),
            emulator.api_base_url(),
        );
        App {
            emulator,
            clock,
            toml,
        }
    }

    /// `n` whole sidecars of this app: their egress addresses, and the senders that
    /// stop them when dropped.
    async fn replicas(&self, n: usize) -> (Vec<SocketAddr>, Vec<oneshot::Sender<()>>) {
        let mut replicas = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..n {
            let (egress, stop) = self.replica().await;
            replicas.push(egress);
            stops.push(stop);
        }
        (replicas, stops)
    }

    /// A whole sidecar of this app; stopped when the sender is dropped.
    async fn replica(&self) -> (SocketAddr, oneshot::Sender<()>) {
        let config = load_str(&self.toml, Vec::new())
            .expect("replica config")
            .config;
        let server = Server::bind(config, self.clock.clone())
            .await
            .expect("replica binds");
        let egress = server.addresses().egress.expect("egress on");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        (egress, stop)
    }
}

async fn as_user(egress: SocketAddr, user: &str) -> Answer {
    get(
        &format!("http://{egress}/v1/orders"),
        &[
            ("x-tenant-id", TENANT),
            ("x-jtl-act-as", &format!("user:{user}")),
        ],
    )
    .await
}

/// `n` concurrent requests for `user`, spread over the replicas; every one answered 200.
/// Returns the bearer tokens JTL's API saw.
async fn spread(replicas: &[SocketAddr], user: &str, n: usize) -> HashSet<String> {
    let answers =
        futures_util::future::join_all((0..n).map(|i| as_user(replicas[i % replicas.len()], user)))
            .await;
    answers
        .iter()
        .map(|answer| {
            assert_eq!(answer.status, 200, "{:?}", answer.body);
            answer.echoed("authorization").concat()
        })
        .collect()
}

#[tokio::test]
async fn three_replicas_exchange_once_and_refresh_once_between_them() {
    let test = "three_replicas_exchange_once_and_refresh_once_between_them";
    let Some(url) = test_redis_url(test).await else {
        return;
    };
    let app = App::start(&url).await;
    let (replicas, _stops) = app.replicas(3).await;

    let tokens = spread(&replicas, "42", 30).await;
    assert_eq!(tokens.len(), 1, "one token for all three replicas");
    assert_eq!(app.emulator.exchange_calls(ExchangeKind::User), 1);

    let mut seen = tokens;
    for round in 1..=2u64 {
        // Due (60 s before the 600 s expiry): one refresh between the three.
        app.clock.advance(Duration::from_secs(545));
        let tokens = spread(&replicas, "42", 30).await;
        assert_eq!(
            tokens.len(),
            1,
            "round {round}: one refreshed token for all"
        );
        assert!(seen.is_disjoint(&tokens), "round {round}: a new token");
        seen.extend(tokens);
        assert_eq!(app.emulator.refresh_calls(ExchangeKind::User), round);
        assert_eq!(app.emulator.exchange_calls(ExchangeKind::User), 1);
    }
    assert_eq!(app.emulator.refresh_token_reuses(), 0);
}

#[tokio::test]
async fn with_redis_killed_each_replica_exchanges_alone_and_never_reuses_a_refresh_token() {
    let test = "with_redis_killed_each_replica_exchanges_alone_and_never_reuses_a_refresh_token";
    if test_redis_url(test).await.is_none() {
        return;
    }
    let Some(mut redis) = PrivateRedis::start(test, &[]).await else {
        return;
    };
    let app = App::start(&redis.url("", 0)).await;
    let (replicas, _stops) = app.replicas(3).await;
    let shared = spread(&replicas, "42", 9).await;
    assert_eq!(shared.len(), 1);
    assert_eq!(app.emulator.exchange_calls(ExchangeKind::User), 1);

    // Redis dies; the token falls due. The refresh token came from the shared entry,
    // which other replicas hold too: each replica exchanges afresh for itself instead.
    redis.kill();
    app.clock.advance(Duration::from_secs(545));
    for (i, egress) in replicas.iter().enumerate() {
        let answer = as_user(*egress, "42").await;
        assert_eq!(answer.status, 200, "replica {i}: {:?}", answer.body);
        assert!(!shared.contains(&answer.echoed("authorization").concat()));
    }
    assert_eq!(app.emulator.exchange_calls(ExchangeKind::User), 4);
    assert_eq!(app.emulator.refresh_calls(ExchangeKind::User), 0);
    assert_eq!(app.emulator.refresh_token_reuses(), 0);

    // Redis is back (empty): the next time the token falls due, one exchange for all.
    redis.restart().await;
    app.clock.advance(Duration::from_secs(545));
    eventually_async("the replicas share again", || async {
        spread(&replicas, "42", 6).await.len() == 1
    })
    .await;
    assert_eq!(app.emulator.refresh_token_reuses(), 0);
}
