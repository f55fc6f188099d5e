//! Secrets and roots that change without a restart, in the form Kubernetes updates a
//! mounted Secret: the visible file is a link `name -> ..data/name`, and `..data` is
//! swapped atomically (a new link renamed over it) to a new directory.
//! `jtl.ca_file` is followed by new JTL connections, `shared_cache.redis_password_file`
//! by the next Redis connection, `jtl.client_secret_file` by the next token request.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::harness::eventually_async;
use common::logs::Logs;
use common::proxy::{Proxy, get as proxy_get};
use common::redis::{PrivateRedis, test_redis_url};
use http_body_util::Full;
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::config::load_str;
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions};
use jtl_auth_sidecar::jtl::Jtl;
use jtl_auth_sidecar::jtl::http::{CallError, ConnectFailure, JtlHttp};
use jtl_auth_sidecar::shared_cache::{EntryNow, RedisFailure, SealingKey};
use jtl_auth_sidecar::tls::TlsRoots;
use tokio::runtime::Handle;

const CA_CHANGED: &str = "jtl.ca_file changed: new JTL connections use its roots";
const PASSWORD_CHANGED: &str =
    "shared_cache.redis_password_file changed: new Redis connections log in with it";
const SECRET_CHANGED: &str = "read a changed client secret from jtl.client_secret_file";

/// A file mounted from a Secret: `dir/name -> ..data/name`, `..data -> ..2026_N`.
struct Mounted {
    dir: tempfile::TempDir,
    name: &'static str,
    generation: u32,
}

impl Mounted {
    fn new(name: &'static str, content: &[u8]) -> Mounted {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Mounted {
            dir,
            name,
            generation: 0,
        };
        mounted.write_generation(content);
        std::os::unix::fs::symlink(mounted.generation_name(), mounted.dir.path().join("..data"))
            .expect("..data link");
        std::os::unix::fs::symlink(
            Path::new("..data").join(name),
            mounted.dir.path().join(name),
        )
        .expect("file link");
        mounted
    }

    /// The path the sidecar is configured with.
    fn path(&self) -> PathBuf {
        self.dir.path().join(self.name)
    }

    fn generation_name(&self) -> String {
        format!("..2026_12_07_{}", self.generation)
    }

    fn write_generation(&self, content: &[u8]) {
        let generation = self.dir.path().join(self.generation_name());
        std::fs::create_dir(&generation).expect("generation dir");
        std::fs::write(generation.join(self.name), content).expect("generation file");
    }

    /// What the kubelet does: a new directory, a new link to it renamed over `..data`,
    /// the old directory removed.
    fn swap(&mut self, content: &[u8]) {
        let old = self.dir.path().join(self.generation_name());
        self.generation += 1;
        self.write_generation(content);
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(self.generation_name(), &tmp).expect("..data_tmp link");
        std::fs::rename(&tmp, self.dir.path().join("..data")).expect("swap ..data");
        std::fs::remove_dir_all(old).expect("old generation removed");
    }
}

/// The process's log lines with `message` about `file`.
fn lines_about(message: &str, file: &Path) -> usize {
    let file = file.display().to_string();
    Logs::global()
        .lines()
        .iter()
        .filter(|line| line["message"] == message && line["file"] == file.as_str())
        .count()
}

fn get(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn tls_emulator() -> EmulatorOptions {
    EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    }
}

#[tokio::test]
async fn a_swapped_ca_file_is_trusted_by_new_jtl_connections_and_open_ones_stay() {
    Logs::global();
    let clock = Clock::manual(common::harness::START_MS);
    // Two JTL endpoints whose certificates come from different CAs.
    let first = Emulator::start(tls_emulator(), clock.clone())
        .await
        .expect("emulator");
    let second = Emulator::start(tls_emulator(), clock.clone())
        .await
        .expect("emulator");
    let pem = |emulator: &Emulator| emulator.ca_pem().expect("a CA").as_bytes().to_vec();
    let mut ca_file = Mounted::new("ca.pem", &pem(&first));
    let roots = TlsRoots::new(Some(&ca_file.path())).expect("roots");
    let http = JtlHttp::with_roots(
        Duration::from_secs(5),
        Arc::clone(&roots),
        Handle::current(),
    );

    http.call(get(&first.jwks_url()))
        .await
        .expect("the first CA is trusted");
    let refused = http
        .call(get(&second.jwks_url()))
        .await
        .expect_err("the second CA is not trusted yet");
    assert!(
        matches!(
            refused,
            CallError::Connect {
                kind: ConnectFailure::Tls,
                ..
            }
        ),
        "{refused:?}"
    );

    ca_file.swap(&pem(&second));
    http.call(get(&second.jwks_url()))
        .await
        .expect("a new connection trusts the swapped file");
    http.call(get(&second.jwks_url())).await.expect("and again");
    // The connection to the first endpoint was opened before and stays in the pool: a
    // new one would be refused now.
    http.call(get(&first.jwks_url()))
        .await
        .expect("the pooled connection stays");
    assert_eq!(lines_about(CA_CHANGED, &ca_file.path()), 1);

    // A changed file that holds no certificate: the roots stay, one warning.
    let before = roots.config();
    ca_file.swap(b"not a certificate\n");
    let warned = |logs: &Logs| {
        let file = ca_file.path().display().to_string();
        logs.lines()
            .iter()
            .filter(|line| {
                line["file"] == file.as_str()
                    && line["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("jtl.ca_file changed but is not usable"))
            })
            .count()
    };
    assert!(Arc::ptr_eq(&before, &roots.config()), "the roots stay");
    assert!(Arc::ptr_eq(&before, &roots.config()));
    assert_eq!(
        warned(Logs::global()),
        1,
        "one warning, not one per connection"
    );
    assert_eq!(lines_about(CA_CHANGED, &ca_file.path()), 1);
}

#[tokio::test]
async fn a_swapped_redis_password_file_logs_the_next_connection_in() {
    let test = "a_swapped_redis_password_file_logs_the_next_connection_in";
    Logs::global();
    if test_redis_url(test).await.is_none() {
        return;
    }
    let Some(redis) = PrivateRedis::start(test, &["--requirepass", "first-pass"]).await else {
        return;
    };
    let clock = Clock::manual(common::harness::START_MS);
    let emulator = Emulator::start(EmulatorOptions::default(), clock.clone())
        .await
        .expect("emulator");
    let mut password_file = Mounted::new("redis-password", b"first-pass\n");
    let options = EmulatorOptions::default();
    let toml = format!(
        "[jtl]\nclient_id = {:?}\nclient_secret = {:?}\ntoken_url = {:?}\napi_base_url = {:?}\ntimeout_ms = 2000\n\
         [session]\nflow = \"session-token\"\n\
         [shared_cache]\nredis_url = {:?}\nkey_prefix = \"reread-{}\"\nredis_password_file = {:?}\n",
        options.client_id,
        options.client_secret,
        emulator.token_url(),
        emulator.api_base_url(),
        redis.url("", 0),
        uuid::Uuid::new_v4().simple(),
        password_file.path().display().to_string(),
    );
    let config = load_str(&toml, Vec::new()).expect("config").config;
    let replica = || {
        Jtl::from_config_with_shared_store(
            &config,
            clock.clone(),
            jtl_auth_sidecar::shared_cache::SharedTokenStore::from_config(
                &config,
                TlsRoots::new(None).expect("roots"),
                clock.clone(),
                Handle::current(),
            )
            .expect("store"),
            Handle::current(),
        )
        .expect("JTL client")
        .tokens
    };
    let (one, two) = (replica(), replica());
    let token = one.get().await.expect("a token").value().to_owned();
    assert_eq!(two.get().await.expect("a token").value(), token);
    assert_eq!(emulator.token_requests(), 1, "shared through Redis");

    // Redis gets a new password and drops its clients; the Secret is swapped after.
    let mut admin = redis::Client::open(redis.url(":first-pass@", 0))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("second-pass")
        .query_async(&mut admin)
        .await
        .expect("CONFIG SET");
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL");

    let store = two.shared_store().expect("a shared store");
    let key = SealingKey::derive(options.client_secret.as_bytes());
    let refused = store.probe(Some(&key)).await.expect_err("the old password");
    assert!(matches!(refused, RedisFailure::Auth { .. }), "{refused:?}");

    password_file.swap(b"second-pass\n");
    let probe = store.probe(Some(&key)).await.expect("the new password");
    match probe.entry {
        EntryNow::Opens(entry) => assert_eq!(entry.token, token),
        other => panic!("the shared entry is read again: {other:?}"),
    }
    store.probe(Some(&key)).await.expect("the same connection");
    assert_eq!(lines_about(PASSWORD_CHANGED, &password_file.path()), 1);
    assert!(
        !Logs::global().text().contains("second-pass"),
        "never the content"
    );
}

#[tokio::test]
async fn a_swapped_client_secret_file_is_used_by_the_next_token_request() {
    Logs::global();
    let clock = Clock::manual(common::harness::START_MS);
    let emulator = Emulator::start(EmulatorOptions::default(), clock.clone())
        .await
        .expect("emulator");
    let options = EmulatorOptions::default();
    let mut secret_file = Mounted::new("client-secret", options.client_secret.as_bytes());
    let toml = format!(
        "[jtl]\nclient_id = {:?}\nclient_secret_file = {:?}\ntoken_url = {:?}\napi_base_url = {:?}\n\
         [session]\nflow = \"session-token\"\n",
        options.client_id,
        secret_file.path().display().to_string(),
        emulator.token_url(),
        emulator.api_base_url(),
    );
    let config = load_str(&toml, Vec::new()).expect("config").config;
    let jtl = Jtl::from_config(&config, clock.clone()).expect("JTL client");
    let first = jtl.tokens.get().await.expect("a token").value().to_owned();

    // JTL rotates the client secret; the Secret follows.
    emulator.set_client_secret("rotated-secret");
    secret_file.swap(b"rotated-secret");
    // The token expires: the next request reads the file.
    clock.advance(Duration::from_secs(3600));
    let second = jtl.tokens.get().await.expect("a token with the new secret");
    assert_ne!(second.value(), first);
    assert_eq!(emulator.token_requests(), 2);
    assert_eq!(jtl.tokens.counts().failed.load(Ordering::SeqCst), 0);
    assert_eq!(lines_about(SECRET_CHANGED, &secret_file.path()), 1);
}

/// The running sidecar: one holder of `jtl.ca_file` for the token request and egress, so
/// a swap is logged once and both the token request and the egress call, on new
/// connections, trust the new CA.
#[tokio::test]
async fn a_running_sidecar_takes_up_a_swapped_ca_file_for_tokens_and_egress() {
    Logs::global();
    // A CA that JTL's endpoint does not use: what the file holds at start.
    let stranger = Emulator::start(tls_emulator(), Clock::manual(common::harness::START_MS))
        .await
        .expect("emulator");
    let pem = |emulator: &Emulator| emulator.ca_pem().expect("a CA").as_bytes().to_vec();
    let mut ca_file = Mounted::new("ca.pem", &pem(&stranger));
    let proxy = Proxy::builder()
        .egress()
        .emulator(tls_emulator())
        .env([(
            "JTL_SIDECAR_JTL__CA_FILE".to_owned(),
            ca_file.path().display().to_string(),
        )])
        .start()
        .await;
    let untrusted = proxy_get(&proxy.egress_url("/v1/orders"), &[]).await;
    assert_ne!(untrusted.status, 200, "JTL's CA is not trusted yet");
    assert_eq!(proxy.emulator.api_requests(), 0);

    ca_file.swap(&pem(&proxy.emulator));
    // Past the wait after the failed token request.
    proxy.clock.advance(Duration::from_secs(600));
    eventually_async("egress answers through the new roots", || async {
        proxy_get(&proxy.egress_url("/v1/orders"), &[]).await.status == 200
    })
    .await;
    assert!(proxy.emulator.token_requests() >= 1);
    assert_eq!(lines_about(CA_CHANGED, &ca_file.path()), 1);
}
